"""The operator at scale on the local control plane: N cascades with a 10 s plan interval.

Everything is real except the load: the API server, scheduler, controller manager and kwok's
fake GPU nodes (a control plane of its own, started and stopped here, with extra nodes so every
cascade's GPUs fit), Debian's Prometheus, and the operator itself (``hadis operator run``,
leader-elected). The routers' traffic is stood in for
by one exporter that publishes ``hadis_router_requested_images_total{cascade=...}`` at rates the
benchmark sets; Prometheus scrapes it every second, as it would scrape the routers.

Phases and figures:
1. create N cascades at once: time until all are Ready, and until all worker rollouts complete;
2. idle with the operator, then idle without it (same objects, same window): the operator's API
   requests per second by verb (the difference of the API server's apiserver_request_total),
   its writes per idle minute, CPU and resident memory;
3. a load step (1 -> 8 req/s) on K cascades: seconds from the step to a scaled-up light-tier
   Deployment (p50 / max): the surge trigger's checks (every 2 s, 5 s rate window), not the
   plan interval, bound it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter as Tally
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from hadis.contract import CASCADE_LABEL, MODEL_LABEL  # noqa: E402
from hadis.core.bundle import parse_configmap  # noqa: E402
from hadis.local import api_request_counts, free_port, running_prometheus, wait_http_ok  # noqa: E402
from hadis.operator.logic import decide  # noqa: E402
from hadis.operator.spec import CascadeSpec  # noqa: E402

LIGHT = "sdxl-lightning-2step"
LOW_RPS, HIGH_RPS = 1.0, 8.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cascade_spec(prometheus_url: str, interval_s: int) -> dict:
    """The E1 models on a 4-GPU budget, all of it spent (``spareGpus: Keep``): at 1 req/s the
    plan is 1 light + 3 heavy replicas, at 8 req/s 3 light + 1 heavy (checked below with the
    same planner the operator runs)."""
    return {
        "models": [
            {"name": "sdxl-lightning-2step", "workerSpec": "sdxl-lightning-2step"},
            {"name": "sd3.5-large-turbo", "workerSpec": "sd3.5-large-turbo"},
            {"name": "sd3.5-medium", "workerSpec": "sd3.5-medium"},
            {"name": "sd3.5-large", "workerSpec": "sd3.5-large"},
        ],
        "sloSeconds": 6,
        "gpuBudget": {"min": 2, "max": 4},
        "profile": {"configMapName": "hadis-l40s"},
        "prometheus": {"url": prometheus_url, "window": "10s"},
        "planner": {"intervalSeconds": interval_s, "policy": "hadis", "objective": {"spareGpus": "Keep"}},
        "router": {"replicas": 1, "scoring": "rule"},
    }


class Kube:
    def __init__(self, kubectl: str, kubeconfig: str) -> None:
        self.kubectl, self.kubeconfig = kubectl, kubeconfig

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        res = subprocess.run([self.kubectl, f"--kubeconfig={self.kubeconfig}", *args], input=stdin,
                             capture_output=True, text=True)  # fmt: skip
        if res.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:3])}: {res.stderr.strip()}")
        return res.stdout


def api_requests(kube: Kube) -> Tally:
    """The API server's request counters, by (verb, resource[/subresource])."""
    return api_request_counts(kube("get", "--raw", "/metrics"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def memory_mib(pid: int) -> tuple[float, float]:
    """Resident and peak resident memory (VmRSS, VmHWM)."""
    vals = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, kb = line.split()[:2]
            vals[key] = int(kb) / 1024
    return vals["VmRSS:"], vals["VmHWM:"]


class LoadExporter:
    """Publishes the router's demand series (``RouterMetrics.requested_images``) per cascade at
    settable rates (Prometheus scrapes it, with the namespace label a monitor adds)."""

    def __init__(self, names: list[str], rate: float) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        from hadis.router.metrics import RouterMetrics

        self.registry = CollectorRegistry()
        self.counter = RouterMetrics(self.registry).requested_images
        self.rates = {n: rate for n in names}
        self.port = free_port()
        start_http_server(self.port, addr="127.0.0.1", registry=self.registry)
        self._stop = threading.Event()
        threading.Thread(target=self._tick, daemon=True).start()

    def _tick(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.1):
            now = time.monotonic()
            for name, rate in list(self.rates.items()):
                self.counter.labels(cascade=name).inc(rate * (now - last))
            last = now

    def stop(self) -> None:
        self._stop.set()


def wait_for(what: str, fn, timeout_s: float, every: float = 1.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        got = fn()
        if got:
            return got
        time.sleep(every)
    raise SystemExit(f"error: {what} not reached in {timeout_s:.0f} s")


def cascades_state(kube: Kube, ns: str) -> list[dict]:
    return json.loads(kube("get", "dcas", "-n", ns, "-o", "json"))["items"]


def cond(obj: dict, type_: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def add_nodes(kube: Kube, count: int, gpus: int, prefix: str) -> None:
    sys.path.insert(0, str(ROOT / "hack"))
    from cluster import fake_node

    items = [fake_node(f"{prefix}-{i}", gpus) for i in range(count)]
    kube("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cascades", type=int, default=100)
    ap.add_argument("--interval", type=int, default=10, help="plan interval, seconds (default 10)")
    ap.add_argument("--idle", type=float, default=60.0, help="seconds of each idle window (default 60)")
    ap.add_argument("--step", type=int, default=10, help="cascades whose load steps up (default 10)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench_operator.json")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # SIGTERM cleans up like Ctrl-C

    # the planner the operator runs, offline: the step must change the light tier's replicas
    bundle = parse_configmap((ROOT / "profiles" / "configmap-l40s.yaml").read_text())
    spec = cascade_spec("http://unused", args.interval)
    low = decide(bundle, CascadeSpec.parse(spec), LOW_RPS, None).replicas
    high = decide(bundle, CascadeSpec.parse(spec), HIGH_RPS, None).replicas
    assert low[LIGHT] < high[LIGHT], (low, high)
    print(f"plan at {LOW_RPS} req/s: {low}; at {HIGH_RPS} req/s: {high}", flush=True)

    # A control plane of its own: the request counts are differences between two idle windows,
    # so nothing else (another test's namespace being deleted, say) may run on it.
    state_dir = Path(tempfile.mkdtemp(prefix="hadis-bench-cluster-"))
    cluster_env = {**os.environ, "HADIS_CLUSTER_DIR": str(state_dir)}
    t = time.monotonic()
    up = subprocess.run([sys.executable, str(ROOT / "hack" / "cluster.py"), "up"], capture_output=True, text=True,
                        env=cluster_env)  # fmt: skip
    if up.returncode != 0:
        raise SystemExit(up.stderr)
    print(f"control plane up in {time.monotonic() - t:.1f} s", flush=True)
    kubeconfig = up.stdout.strip().splitlines()[-1].split("=", 1)[1]
    bin_dir = Path(json.loads((state_dir / "state.json").read_text())["bin_dir"])
    kube = Kube(str(bin_dir / "kubectl"), kubeconfig)
    ns = f"hadis-bench-{uuid.uuid4().hex[:6]}"
    node_prefix = f"bench-{ns[-6:]}"
    nodes = (args.cascades * 4 + 7) // 8
    operator = None
    names = [f"c{i:03d}" for i in range(args.cascades)]
    exporter = LoadExporter(names, LOW_RPS)
    results: dict = {"cascades": args.cascades, "interval_s": args.interval, "fake_gpu_nodes_added": nodes}
    try:
        add_nodes(kube, nodes, 8, node_prefix)
        kube("create", "namespace", ns)
        kube("apply", "--server-side", "-f", str(ROOT / "crds" / "diffusioncascades.serving.hadis.dev.yaml"))
        kube("wait", "--for=condition=Established", "crd/diffusioncascades.serving.hadis.dev", "--timeout=60s")
        cm = yaml.safe_load((ROOT / "profiles" / "configmap-l40s.yaml").read_text())
        cm["metadata"]["name"] = "hadis-l40s"
        kube("apply", "--server-side", "-n", ns, "-f", "-", stdin=json.dumps(cm))
        targets = [f"127.0.0.1:{exporter.port}"]
        with running_prometheus(Path(f"/tmp/{ns}-prometheus"), targets, labels={"namespace": ns}) as prom_url:
            log = Path(f"/tmp/{ns}-operator.log")
            health = free_port()
            operator = subprocess.Popen(
                [sys.executable, "-m", "hadis.cli", "operator", "run", "--namespace", ns,
                 "--health-host", "127.0.0.1", "--health-port", str(health)],
                env={**os.environ, "KUBECONFIG": kubeconfig, "PYTHONUNBUFFERED": "1"},
                stdout=log.open("w"), stderr=subprocess.STDOUT,
            )  # fmt: skip
            assert wait_http_ok(f"http://127.0.0.1:{health}/healthz", 60, operator), log.read_text()[-2000:]
            wait_for("the operator holding its lease", lambda: "became the leader" in log.read_text(), 60, 0.5)
            time.sleep(3)  # let the operator settle before the measured work
            pid = operator.pid
            print(f"operator started: pid {pid}, {memory_mib(pid)[0]:.1f} MiB resident", flush=True)

            # 1. create all cascades at once
            items = [
                {"apiVersion": "serving.hadis.dev/v1alpha1", "kind": "DiffusionCascade",
                 "metadata": {"name": n, "namespace": ns}, "spec": cascade_spec(prom_url, args.interval)}
                for n in names
            ]  # fmt: skip
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            kube("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))

            def all_with(type_: str, status: str):
                objs = cascades_state(kube, ns)
                ok = sum(1 for o in objs if cond(o, type_).get("status") == status)
                return ok == len(names) and ok

            wait_for(f"all {len(names)} Ready", lambda: all_with("Ready", "True"), 600)
            ready_s = time.monotonic() - t0
            wait_for("all rollouts complete", lambda: all_with("Progressing", "False"), 600)
            rollout_s = time.monotonic() - t0
            create_cpu = cpu_seconds(pid) - cpu0
            print(f"{len(names)} cascades: all Ready after {ready_s:.1f} s, all rollouts complete after "
                  f"{rollout_s:.1f} s (operator CPU {create_cpu:.1f} s)", flush=True)  # fmt: skip
            results.update(all_ready_s=ready_s, all_rollouts_complete_s=rollout_s, create_cpu_s=create_cpu)
            time.sleep(2 * args.interval)  # every daemon has ticked on the settled cluster

            # 2a. idle, with the operator
            before, cpu0, t0 = api_requests(kube), cpu_seconds(pid), time.monotonic()
            time.sleep(args.idle)
            with_op, idle_wall = api_requests(kube) - before, time.monotonic() - t0
            idle_cpu = cpu_seconds(pid) - cpu0
            rss, peak = memory_mib(pid)
            print(f"idle {idle_wall:.0f} s with the operator: CPU {100 * idle_cpu / idle_wall:.1f}% of a core, "
                  f"{rss:.1f} MiB resident (peak {peak:.1f} MiB)", flush=True)  # fmt: skip

            # 3. load step on some cascades
            stepped = names[: args.step]
            t_step = time.monotonic()
            for n in stepped:
                exporter.rates[n] = HIGH_RPS
            scaled: dict[str, float] = {}
            from kubernetes import client, config

            config.load_kube_config(config_file=kubeconfig)
            apps = client.AppsV1Api()
            end = t_step + 6 * args.interval + 30
            while len(scaled) < len(stepped) and time.monotonic() < end:
                deps = apps.list_namespaced_deployment(ns, label_selector=f"{MODEL_LABEL}={LIGHT}").items
                for d in deps:
                    owner = d.metadata.labels[CASCADE_LABEL]
                    if owner in stepped and owner not in scaled and d.spec.replicas > low[LIGHT]:
                        scaled[owner] = time.monotonic() - t_step
                time.sleep(0.25)
            times = sorted(scaled.values())
            if len(times) < len(stepped):
                print(f"warning: only {len(times)} of {len(stepped)} stepped cascades scaled", flush=True)
            p50 = times[len(times) // 2] if times else float("nan")
            print(f"load step {LOW_RPS} -> {HIGH_RPS} req/s on {len(stepped)} cascades: light tier "
                  f"{low[LIGHT]} -> more replicas after p50 {p50:.1f} s, max "
                  f"{max(times, default=float('nan')):.1f} s (early re-plans: checks every 2 s of the 5 s rate "
                  f"window; {args.interval} s plan interval, 1 s scrape)", flush=True)  # fmt: skip
            results.update(step_cascades=len(stepped), step_scaled=len(times), step_to_scale_s=times)
            time.sleep(2 * args.interval)  # the stepped cascades settle

            # 2b. idle, without the operator (same objects, same window)
            operator.send_signal(signal.SIGTERM)
            operator.wait(60)
            operator = None
            time.sleep(5)
            before, t0 = api_requests(kube), time.monotonic()
            time.sleep(args.idle)
            without_op, base_wall = api_requests(kube) - before, time.monotonic() - t0

        per_s_with = {k: v / idle_wall for k, v in with_op.items()}
        per_s_without = {k: v / base_wall for k, v in without_op.items()}
        keys = set(per_s_with) | set(per_s_without)
        delta = {k: per_s_with.get(k, 0.0) - per_s_without.get(k, 0.0) for k in keys}
        total = sum(delta.values())
        writes = sum(v for (verb, _), v in delta.items() if verb not in ("GET", "LIST", "WATCH"))
        print(f"\nAPI requests/s attributable to the operator while idle ({len(names)} cascades, "
              f"{args.interval} s interval): {total:.2f} (cluster {sum(per_s_with.values()):.2f} with it, "
              f"{sum(per_s_without.values()):.2f} without)", flush=True)  # fmt: skip
        print(f"{'verb':7} {'resource':34} {'req/s':>7}")
        for (verb, res), v in sorted(delta.items(), key=lambda kv: -abs(kv[1])):
            if abs(v) >= 0.05:
                print(f"{verb:7} {res:34} {v:7.2f}")
        print(f"writes per idle minute (create/update/patch/delete, difference): {60 * writes:.1f}")
        print(f"operator: CPU {100 * idle_cpu / idle_wall:.1f}% of a core idle, {create_cpu:.1f} CPU-s to create "
              f"{len(names)} cascades; {rss:.1f} MiB resident, peak {peak:.1f} MiB")  # fmt: skip
        results.update(
            idle_cpu_percent=100 * idle_cpu / idle_wall,
            rss_mib=rss,
            peak_rss_mib=peak,
            api_requests_per_s_operator=total,
            api_requests_per_s_by_verb={f"{v} {r}": x for (v, r), x in delta.items() if abs(x) >= 0.01},
            writes_per_idle_minute=60 * writes,
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.out}")
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(30)
        exporter.stop()
        subprocess.run([sys.executable, str(ROOT / "hack" / "cluster.py"), "down"], capture_output=True,
                       env=cluster_env)  # fmt: skip
        shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
