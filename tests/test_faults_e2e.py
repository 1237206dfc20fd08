"""Faults on the product as deployed, with traffic flowing: each keeps the last good plan and
serves, sets the right condition and clears it on recovery, and loses no accepted request.

The stack (``tests/realpods.py``) runs in namespaces that enforce Pod Security ``restricted``.
Requests go to a router pod's own address (the port-forward passes through the API server,
which one test restarts). "Answered" counts every HTTP answer; a request with no answer at all
(refused, reset, timed out) is lost. The tests run in file order; the last ones restart the
API server and etcd.

Prometheus's faults go through ``FaultyPrometheus``, a proxy in front of the real Prometheus
that answers late or rewrites the rates it returns to NaN or a negative number: what a broken
exporter, recording rule or overloaded server does, and what a real Prometheus cannot be made
to do on purpose. Stopping Prometheus stops the real one.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hadis.contract import ROUTER_ADMIN_PORT, ROUTER_PORT

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))
import demo  # noqa: E402
import node  # noqa: E402

from realpods import HARD, SIMPLE, Traffic, pods, ready  # noqa: E402
from support import wait_until  # noqa: E402

pytestmark = pytest.mark.realpods
SOAK_S = float(os.environ.get("HADIS_SOAK_SECONDS", "60"))
CASCADE = "tiny"


class FaultyPrometheus:
    """An HTTP proxy to a real Prometheus, on the node's bridge address (pods reach it there).
    ``mode``: ``pass`` forwards; ``slow`` answers after ``delay_s``; ``nan`` and ``negative``
    rewrite every sample of a query's answer."""

    def __init__(self, upstream: str, delay_s: float):
        self.upstream, self.delay_s, self.mode = upstream, delay_s, "pass"
        self.queries = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.queries += 1
                mode = proxy.mode
                if mode == "slow":
                    time.sleep(proxy.delay_s)
                try:
                    with urllib.request.urlopen(proxy.upstream + self.path, timeout=30) as r:
                        status, body = r.status, r.read()
                except urllib.error.HTTPError as e:
                    status, body = e.code, e.read()
                if mode in ("nan", "negative") and self.path.startswith("/api/v1/query"):
                    doc = json.loads(body)
                    for series in doc["data"]["result"]:
                        series["value"][1] = "NaN" if mode == "nan" else "-3.5"
                    body = json.dumps(doc).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the operator gave up waiting (``slow``): what it should do

            def log_message(self, *_args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((node.NODE_IP, demo.free_port(node.NODE_IP)), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{node.NODE_IP}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _cascade(stack) -> dict:
    return stack.cluster.json("get", "dcas", CASCADE, "-n", stack.namespace)


def _patch(stack, spec: dict) -> None:
    body = json.dumps({"spec": spec})
    stack.cluster.kubectl("patch", "dcas", CASCADE, "-n", stack.namespace, "--type=merge", "-p", body)


def _degraded(stack) -> dict:
    return demo.condition(_cascade(stack), "Degraded")


def _metrics_unavailable(stack) -> dict | None:
    cond = _degraded(stack)
    return cond if cond.get("reason") == "MetricsUnavailable" else None


def _leader(stack) -> str | None:
    return stack.cluster.json("get", "lease", "hadis-operator", "-n", stack.operator_namespace)["spec"].get(
        "holderIdentity"
    )


def _router_url(stack, port: int = ROUTER_PORT) -> str:
    """A ready router pod's inference URL (``port``: or its admin port's)."""
    router = next(p for p in pods(stack.cluster, stack.namespace, "app.kubernetes.io/component=router") if ready(p))
    return f"http://{router['status']['podIP']}:{port}"


def _replicas(stack) -> dict[str, int]:
    deps = stack.cluster.json("get", "deployments", "-n", stack.namespace, "-l", "app.kubernetes.io/component=worker")
    return {d["metadata"]["name"]: d["spec"]["replicas"] for d in deps["items"]}


def _owned_uids(stack) -> dict[str, str]:
    out = {}
    for kind in ("deployments", "services", "configmaps", "networkpolicies"):
        items = stack.cluster.json("get", kind, "-n", stack.namespace, "-l", f"serving.hadis.dev/cascade={CASCADE}")
        out.update({f"{kind}/{i['metadata']['name']}": i["metadata"]["uid"] for i in items["items"]})
    return out


def _recovered(stack) -> bool:
    st = _cascade(stack)
    return (
        demo.condition(st, "Ready").get("status") == "True" and demo.condition(st, "Degraded").get("status") == "False"
    )


def _account(what: str, traffic: Traffic) -> list[tuple[int, dict, float]]:
    """Every request sent was answered (none lost); prints the tally."""
    results = traffic.results()
    lost = [r[1].get("error") for r in results if r[0] == 0]
    statuses = sorted({r[0] for r in results})
    ok = sum(r[0] == 200 for r in results)
    print(f"{what}: {len(results)} requests sent, {len(results) - len(lost)} answered ({ok} with images), "
          f"statuses {statuses}, {len(lost)} lost")  # fmt: skip
    assert results, "no traffic was sent"
    assert not lost, f"{len(lost)} of {len(results)} requests got no answer: {lost[:3]}"
    assert set(statuses) <= {200, 503}, statuses  # 503: shed or no worker in time, said with Retry-After
    return results


def test_every_pod_is_admitted_under_restricted_and_only_the_router_holds_a_token(stack):
    """Pod Security admission (the API server's) decides: the namespaces enforce ``restricted``,
    every pod of the chart and the operator runs there, and a pod asking for more is refused."""
    c, ns = stack.cluster, stack.namespace
    for namespace in (ns, stack.operator_namespace):
        labels = c.json("get", "namespace", namespace)["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted", labels
    components = {p["metadata"]["labels"].get("app.kubernetes.io/component") for p in pods(c, ns)}
    assert components == {"router", "worker"}
    assert len(pods(c, stack.operator_namespace)) == 2
    for p in pods(c, ns):
        mounts = {m["mountPath"] for ct in p["spec"]["containers"] for m in ct.get("volumeMounts", [])}
        token = "/var/run/secrets/kubernetes.io/serviceaccount" in mounts
        role = p["metadata"]["labels"]["app.kubernetes.io/component"]
        assert token == (role == "router"), (p["metadata"]["name"], sorted(mounts))
    policy = c.json("get", "networkpolicy", f"{CASCADE}-workers", "-n", ns)
    assert policy["metadata"]["ownerReferences"][0]["kind"] == "DiffusionCascade"
    hostile = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "asks-for-the-host", "namespace": ns},
        "spec": {
            "containers": [{"name": "c", "image": demo.CONTROL_IMAGE}],
            "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        },
    }
    with pytest.raises(RuntimeError) as refused:
        c.kubectl("apply", "-f", "-", stdin=json.dumps(hostile))
    assert 'violates PodSecurity "restricted:latest"' in str(refused.value) and "hostPath" in str(refused.value)
    print(f"restricted namespaces: {len(pods(c, ns)) + 2} pods admitted; a hostPath pod refused: "
          f"{str(refused.value).splitlines()[0][:160]}")  # fmt: skip


def test_prometheus_late_nan_negative_and_stopped_keep_the_plan_and_say_so(stack):
    proxy = FaultyPrometheus(stack.prometheus_url, delay_s=6.0)
    url = _router_url(stack)
    try:
        _patch(stack, {"prometheus": {"url": proxy.url, "timeoutSeconds": 2}, "planner": {"intervalSeconds": 2}})
        wait_until(lambda: _recovered(stack) and proxy.queries > 0, "the cascade Ready through the proxy", 60)
        before = _replicas(stack)
        with Traffic(url, 1.0, SIMPLE) as traffic:
            expected = {
                "slow": "Prometheus did not answer within 2s; keeping the last plan",
                "nan": "Prometheus answered nan for the demand; keeping the last plan",
                "negative": "Prometheus answered a negative demand (-3.5 images/s); keeping the last plan",
            }
            for mode, message in expected.items():
                proxy.mode = mode
                cond = wait_until(lambda: _metrics_unavailable(stack), f"{mode}: the condition", 60)
                assert cond["status"] == "True" and cond["message"] == message, cond
                assert _replicas(stack) == before, mode  # nothing scaled, in particular not to zero
                proxy.mode = "pass"
                wait_until(lambda: _recovered(stack), f"{mode}: the condition cleared", 60)
                print(f"Prometheus {mode}: MetricsUnavailable ({message}), then cleared")
            # the real Prometheus stopped, and started again on its port and data
            _patch(stack, {"prometheus": {"url": stack.prometheus_url}})
            prom = stack.background[0]
            prom.terminate()
            prom.wait(30)
            cond = wait_until(lambda: _metrics_unavailable(stack), "stopped: the condition", 60)
            assert cond["message"] == "Prometheus unreachable (ConnectionError); keeping the last plan", cond
            assert _replicas(stack) == before
            log = Path(prom.args[1].split("=", 1)[1]).parent / "log"
            stack.background[0] = subprocess.Popen(
                prom.args, stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True
            )
            wait_until(lambda: _recovered(stack), "stopped: the condition cleared after the restart", 90)
            print("Prometheus stopped: MetricsUnavailable (unreachable), cleared once it was back")
        _account("Prometheus faults", traffic)
    finally:
        proxy.close()


def test_the_profile_configmap_deleted_and_restored(stack):
    c, ns = stack.cluster, stack.namespace
    before = _replicas(stack)
    with Traffic(_router_url(stack), 1.0, SIMPLE) as traffic:
        c.kubectl("delete", "configmap", "hadis-tiny", "-n", ns)
        ready_cond = wait_until(
            lambda: (r := demo.condition(_cascade(stack), "Ready")).get("reason") == "ProfileMissing" and r,
            "the ProfileMissing condition", 60,
        )  # fmt: skip
        assert ready_cond["status"] == "False"
        assert ready_cond["message"] == f"ConfigMap {ns}/hadis-tiny: not found; keeping the last plan", ready_cond
        assert _replicas(stack) == before
        c.kubectl("apply", "--server-side", "-n", ns, "-f", str(ROOT / "profiles" / "configmap-tiny.yaml"))
        wait_until(lambda: _recovered(stack), "Ready once the ConfigMap is back", 60)
        assert _replicas(stack) == before
    _account("profile ConfigMap deleted and restored", traffic)
    events = c.json("get", "events", "-n", ns, "--field-selector", "reason=ProfileMissing")["items"]
    assert events and events[0]["type"] == "Warning"


def _drift(stack) -> dict:
    return demo.condition(_cascade(stack), "ProfileDrift")


def test_a_slowed_worker_sets_profile_drift_with_both_figures_and_restoring_it_clears_it(stack):
    """The light workers' batches held to 3 s where the profile says 1 s (their
    ``--min-batch-seconds`` changed through the cascade, so the Deployment rolls): the operator
    reads Triton's counters in Prometheus and says so; back to 1 s, the condition clears."""
    c, ns = stack.cluster, stack.namespace
    models = _cascade(stack)["spec"]["models"]

    def light_held_to(seconds: str) -> list[dict]:
        return [{**m, "args": ["--min-batch-seconds", seconds]} if m["name"] == "tiny-light" else m for m in models]

    # A window four scrapes long (the stack scrapes every 15 s, as kube-prometheus-stack does).
    _patch(stack, {"profileDrift": {"window": "1m", "minBatches": 3, "tolerance": 0.5}})
    with Traffic(_router_url(stack), 1.0, SIMPLE) as traffic:
        ok = wait_until(  # judged once the window holds three light batches: as profiled, about 1 s each
            lambda: (d := _drift(stack)).get("status") == "False" and "tiny-light 1" in d["message"] and d,
            "ProfileDrift False with tiny-light judged",
            180,
        )
        assert ok["reason"] == "WithinTolerance", ok
        _patch(stack, {"models": light_held_to("3.0")})
        # True as soon as the window's mean is off by half; wait for it to hold only the slowed
        # pods' batches (the old pods' 1 s batches leave the 1m window a minute after the rollout)
        slowed = wait_until(
            lambda: (d := _drift(stack)).get("status") == "True" and "tiny-light served 3" in d["message"] and d,
            "ProfileDrift True at the slowed workers' 3 s",
            300,
        )
        assert slowed["reason"] == "LatencyDrift"
        assert "profiled 1s: +2" in slowed["message"], slowed
        _patch(stack, {"models": light_held_to("1.0")})
        cleared = wait_until(  # the restored light workers judged again, as profiled
            lambda: (d := _drift(stack)).get("status") == "False" and "tiny-light 1" in d["message"] and d,
            "ProfileDrift clear",
            300,
        )
    _account("a light worker slowed and restored", traffic)
    print(f"  drift: {slowed['message']}\n  cleared: {cleared['message']}")
    events = c.json("get", "events", "-n", ns, "--field-selector", "reason=ProfileDrift")["items"]
    assert events and events[0]["type"] == "Warning" and "profiled 1s" in events[0]["message"]
    _patch(stack, {"profileDrift": None})


def test_a_workers_triton_killed_inside_its_pod_restarts_it_and_no_request_is_lost(stack):
    """SIGKILL to the Triton server inside a worker container: PyTriton sees it gone, the worker
    exits, the kubelet restarts the container; the router sends what that pod had to another."""
    c, ns = stack.cluster, stack.namespace
    by_model: dict[str, list[dict]] = {}
    for p in pods(c, ns, "app.kubernetes.io/component=worker"):
        if ready(p):
            by_model.setdefault(p["metadata"]["labels"]["serving.hadis.dev/model"], []).append(p)
    model, victims = max(by_model.items(), key=lambda kv: len(kv[1]))
    assert len(victims) >= 2, by_model  # another pod of the tier serves meanwhile
    heavy = _cascade(stack)["status"]["plan"]["pair"].split("->")[1].strip()
    prompts = HARD if model == heavy else SIMPLE  # the router sends hard prompts straight to heavy
    victim = victims[0]["metadata"]["name"]
    restarts = victims[0]["status"]["containerStatuses"][0]["restartCount"]
    kill = (
        "import os, signal\n"
        "for p in filter(str.isdigit, os.listdir('/proc')):\n"
        "    argv0 = open(f'/proc/{p}/cmdline', 'rb').read().split(b'\\0')[0]\n"
        "    if argv0.endswith(b'tritonserver'):\n"
        "        os.kill(int(p), signal.SIGKILL); print('killed', p, argv0.decode())\n"
    )
    with Traffic(_router_url(stack), 1.0, prompts) as traffic:
        time.sleep(3)  # traffic flowing before the kill (the load, not a wait for a condition)
        out = c.kubectl("exec", "-n", ns, victim, "-c", "worker", "--", "python3", "-c", kill)
        assert "killed" in out, out

        def restarted_and_ready() -> bool:
            p = c.json("get", "pod", victim, "-n", ns)
            return p["status"]["containerStatuses"][0]["restartCount"] > restarts and ready(p)

        wait_until(restarted_and_ready, "the worker container restarted and Ready", 180)
        time.sleep(2)  # requests after the recovery
    results = _account(f"Triton killed in {victim} ({model})", traffic)
    # One heavy pod fewer for a while: what the others cannot finish in time is refused at its
    # deadline, with Retry-After (how many depends on this machine's speed: 1 of 29 idle, 4 of
    # 28 with a core kept busy), never dropped and never late.
    slo = float(_cascade(stack)["spec"]["sloSeconds"])
    refused = [r for r in results if r[0] == 503]
    assert all(r[1].get("Retry-After") and r[2] <= slo + 1.0 for r in refused), refused[:3]
    assert any(r[0] == 200 for r in results)
    print(f"  {out.strip()}; container restarted, {len(refused)} answered 503 at their deadline")


def _rss_mib(url: str) -> float:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    line = next(ln for ln in text.splitlines() if ln.startswith("process_resident_memory_bytes "))
    return float(line.split()[1]) / 2**20


def test_a_soak_at_steady_load_keeps_the_router_and_operator_memory_flat(stack):
    """Steady load for ``HADIS_SOAK_SECONDS`` (60 by default); resident memory, as each process
    exports it, sampled every 2 s. Flat: the end within 20 MiB of the level after the first
    tenth (warm-up: the first images, the first plans)."""
    c = stack.cluster
    url, admin = _router_url(stack), _router_url(stack, ROUTER_ADMIN_PORT)
    op_ip = c.json("get", "pod", _leader(stack), "-n", stack.operator_namespace)["status"]["podIP"]
    op_url = f"http://{op_ip}:8080"
    samples: list[tuple[float, float]] = []
    with Traffic(url, 2.0, SIMPLE) as traffic:
        end = time.monotonic() + SOAK_S
        while time.monotonic() < end:
            samples.append((_rss_mib(admin), _rss_mib(op_url)))
            time.sleep(2.0)
    _account(f"soak of {SOAK_S:.0f}s at 2 req/s", traffic)
    base = samples[max(1, len(samples) // 10)]
    last = samples[-1]
    print(f"  resident memory: router {base[0]:.1f} -> {last[0]:.1f} MiB, operator {base[1]:.1f} -> {last[1]:.1f} MiB "
          f"({len(samples)} samples)")  # fmt: skip
    assert len(samples) >= 10
    assert last[0] - base[0] < 20 and last[1] - base[1] < 20, samples


@pytest.mark.parametrize("part", ["kube-apiserver", "etcd"])
def test_the_api_server_or_etcd_restarted_under_traffic(stack, part):
    """The control plane away for a few seconds: the data plane serves throughout, the operator
    reconnects (kopf's watches, the Lease), and nothing is re-created or rescaled."""
    url = _router_url(stack)
    uids, before = _owned_uids(stack), _replicas(stack)
    plan = _cascade(stack)["status"]["plan"]
    with Traffic(url, 1.0, SIMPLE) as traffic:
        time.sleep(2)
        out = subprocess.run(
            [sys.executable, str(ROOT / "hack" / "cluster.py"), "restart", part, "--down-seconds", "5"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        wait_until(lambda: _leader(stack), "an operator replica holding the Lease again", 120)
        wait_until(lambda: _recovered(stack), "the cascade Ready after the restart", 120)
        # the operator acts again: a spec change is reconciled
        _patch(stack, {"planner": {"intervalSeconds": 3 if part == "etcd" else 4}})
        generation = _cascade(stack)["metadata"]["generation"]
        wait_until(
            lambda: _cascade(stack)["status"].get("observedGeneration") == generation, "the change reconciled", 120
        )  # fmt: skip
    _account(f"{part} restarted ({out.stderr.strip().splitlines()[-1]})", traffic)
    assert _owned_uids(stack) == uids  # nothing re-created
    assert _replicas(stack) == before and _cascade(stack)["status"]["plan"]["replicas"] == plan["replicas"]
