#!/usr/bin/env python3
"""``make demo``: the product serving from real pods in the local cluster.

    python hack/demo.py up      # cluster with its real node, images, helm install, tiny cascade, prompts, a load step
    python hack/demo.py down    # port-forward, Prometheus, the release; then `make cluster-down`

The stack it leaves running: the operator (2 leader-elected pods, installed with helm), the
tiny cascade's router and worker pods on the real node, Prometheus (Debian's, on the node's
bridge address, discovering the pods through the API server) and a ``kubectl port-forward`` to
the router Service. The functions here are also what the real-pod tests use.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

HACK = Path(__file__).resolve().parent
ROOT = HACK.parent
sys.path.insert(0, str(HACK))
import monitors  # noqa: E402  (hack/monitors.py)
import node  # noqa: E402  (hack/node.py)

from hadis.contract import MODEL_LABEL  # noqa: E402
from hadis.local import wait_until  # noqa: E402

STATE = Path(os.environ.get("HADIS_DEMO_DIR", ROOT / ".cache" / "demo"))
CLUSTER_STATE = Path(os.environ.get("HADIS_CLUSTER_DIR", ROOT / ".cache" / "cluster"))
OPERATOR_NS = "hadis-system"
DEMO_NS = "hadis-demo"
RELEASE = "hadis"
VERSION = "0.1.0"
CONTROL_IMAGE = f"ghcr.io/hadis-serving/hadis:{VERSION}"
WORKER_IMAGE = f"ghcr.io/hadis-serving/hadis-worker:{VERSION}"
# the real node's taint and label (hack/node.py): what a pod that must really run carries
LOCAL_TOLERATIONS = [{"key": node.TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]
LOCAL_SELECTOR = {node.TAINT_KEY: "true"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    kubeconfig: str
    bin_dir: Path

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        out = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def json(self, *args: str) -> dict:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def helm(self, *args: str) -> str:
        out = subprocess.run(
            [str(self.bin_dir / "helm"), f"--kubeconfig={self.kubeconfig}", *args], capture_output=True, text=True
        )
        if out.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout


def cluster_up() -> Cluster:
    out = subprocess.run([sys.executable, str(HACK / "cluster.py"), "up"], capture_output=True, text=True)
    sys.stderr.write(out.stderr)
    if out.returncode != 0:
        raise SystemExit("error: the local cluster did not start")
    kubeconfig = out.stdout.strip().splitlines()[-1].split("=", 1)[1]
    state = json.loads((CLUSTER_STATE / "state.json").read_text())
    if not state.get("real_node"):
        raise SystemExit("error: the running cluster has no real node; run `make cluster-down` first")
    return Cluster(kubeconfig, Path(state["bin_dir"]))


def load_images(*images: str) -> None:
    out = subprocess.run([sys.executable, str(HACK / "cluster.py"), "load", *images], text=True)
    if out.returncode != 0:
        raise SystemExit(f"error: could not load {' '.join(images)} into the node (make images?)")


def install_operator(
    c: Cluster,
    release: str = RELEASE,
    namespace: str = OPERATOR_NS,
    watch: list[str] | None = None,
    timeout: str = "5m",
    policy: dict | None = None,
) -> None:
    """helm upgrade --install of the chart, its pods on the real node; returns when they are Ready.
    ``watch``: the namespaces it reconciles (default: all); ``policy``: the chart's policy values."""
    # the image ID as an annotation: a rebuilt image under the same tag rolls the operator pods
    image_id = node.image_id(CONTROL_IMAGE) or ""
    values = {
        "nodeSelector": LOCAL_SELECTOR,
        "tolerations": LOCAL_TOLERATIONS,
        "podAnnotations": {"hadis.dev/image-id": image_id.removeprefix("sha256:")[:16]},
        "watchNamespaces": watch or [],
        "policy": policy or {},
    }
    vfile = STATE / "operator-values.json"
    vfile.parent.mkdir(parents=True, exist_ok=True)
    vfile.write_text(json.dumps(values))
    # helm installs a chart's crds/ once and never upgrades them (the chart README): apply this
    # checkout's CRD first, so a cluster kept from an older checkout validates today's fields
    crd = ROOT / "charts" / "hadis-operator" / "crds" / "diffusioncascades.serving.hadis.dev.yaml"
    c.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    c.kubectl("wait", "--for=condition=Established", "crd/diffusioncascades.serving.hadis.dev", "--timeout=60s")
    c.helm("upgrade", "--install", release, str(ROOT / "charts" / "hadis-operator"), "-n", namespace,
           "--create-namespace", "-f", str(vfile), "--wait", f"--timeout={timeout}")  # fmt: skip


def chart_monitors(c: Cluster, directory: Path, release: str = RELEASE, namespace: str = OPERATOR_NS) -> list[dict]:
    """The chart's PodMonitors (``metrics.podMonitor.enabled``) as rendered with the installed
    release's values: what a user's Prometheus Operator would scrape, every 15 s by default, as
    kube-prometheus-stack does. A 1 s scrape once hid a surge window no real Prometheus could
    fill (the demand then read as zero)."""
    values = directory / "release-values.json"
    values.write_text(c.helm("get", "values", release, "-n", namespace, "-o", "json"))
    server = c.json("version")["serverVersion"]["gitVersion"]  # the chart's kubeVersion check
    out = c.helm("template", release, str(ROOT / "charts" / "hadis-operator"), "-n", namespace,
                 "-f", str(values), "--set", "metrics.podMonitor.enabled=true", "--kube-version", server,
                 "--show-only", "templates/monitors.yaml")  # fmt: skip
    return [d for d in yaml.safe_load_all(out) if d and d.get("kind") == "PodMonitor"]


def sync_targets(c: Cluster, namespaces: list[str], directory: Path, every_s: float = 1.0) -> None:
    """Rewrite each monitor job's targets file whenever the pods change (until killed)."""
    jobs = monitors.scrape_jobs(json.loads((directory / "monitors.json").read_text()))
    last: list | None = None
    while True:
        with contextlib.suppress(RuntimeError, json.JSONDecodeError):
            pods = {ns: c.json("get", "pods", "-n", ns)["items"] for ns in namespaces}
            groups = [monitors.job_targets(job, pods) for job in jobs]
            if groups != last:
                for i, g in enumerate(groups):
                    tmp = directory / f"targets-{i}.tmp"
                    tmp.write_text(json.dumps(g))
                    tmp.replace(directory / f"targets-{i}.json")  # atomic: Prometheus never reads half a file
                last = groups
        time.sleep(every_s)


def start_prometheus(
    c: Cluster, directory: Path, namespaces: list[str], release: str = RELEASE, operator_ns: str = OPERATOR_NS
) -> tuple[list[subprocess.Popen], str]:
    """Debian's Prometheus on the node's bridge address (pods reach it there), scraping as the
    chart's own PodMonitors say (``hack/monitors.py``: file discovery, as Debian's build has no
    Kubernetes one), and the process that keeps its targets current; returns both and its URL."""
    sys.path.insert(0, str(ROOT / "src"))
    from hadis.local import prometheus_binary

    directory.mkdir(parents=True, exist_ok=True)
    rendered = chart_monitors(c, directory, release, operator_ns)
    (directory / "monitors.json").write_text(json.dumps(rendered))
    jobs = monitors.scrape_jobs(rendered)
    files = [str(directory / f"targets-{i}.json") for i in range(len(jobs))]
    for f in files:
        Path(f).write_text("[]")
    sync = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "sync-targets", "--kubeconfig", c.kubeconfig,
         "--bin-dir", str(c.bin_dir), "--dir", str(directory), *[f"--namespace={n}" for n in namespaces]],
        stdout=(directory / "sync.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    port = free_port(node.NODE_IP)
    config = monitors.prometheus_config(jobs, files, evaluation_interval=min(j.interval for j in jobs))
    (directory / "prometheus.yml").write_text(json.dumps(config))
    proc = subprocess.Popen(
        [prometheus_binary(), f"--config.file={directory / 'prometheus.yml'}",
         f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address={node.NODE_IP}:{port}"],
        stdout=(directory / "log").open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://{node.NODE_IP}:{port}"
    wait_until(lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=1).status == 200, "Prometheus", 60)
    return [proc, sync], url


def tiny_cascade(prometheus_url: str, name: str = "tiny") -> dict:
    """The shipped tiny example, pointed at this Prometheus (the CRD's default windows)."""
    doc = yaml.safe_load((ROOT / "crds" / "examples" / "cascade-tiny.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["prometheus"] = {"url": prometheus_url}
    return doc


def apply_tiny(
    c: Cluster, namespace: str, prometheus_url: str, name: str = "tiny", cascade: dict | None = None
) -> None:
    """The tiny profile ConfigMap and cascade (``cascade``: a changed ``tiny_cascade``)."""
    c.kubectl("create", "namespace", namespace, check=False)
    c.kubectl("apply", "--server-side", "-n", namespace, "-f", str(ROOT / "profiles" / "configmap-tiny.yaml"))
    doc = cascade or tiny_cascade(prometheus_url, name)
    c.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(doc))


def condition(obj: dict, type_: str) -> dict:
    return next((x for x in (obj.get("status") or {}).get("conditions", []) if x["type"] == type_), {})


def cascade_ready(c: Cluster, namespace: str, name: str = "tiny") -> bool:
    return condition(c.json("get", "dcas", name, "-n", namespace), "Ready").get("status") == "True"


def rolled_out(c: Cluster, namespace: str, name: str = "tiny") -> bool:
    """Every worker Deployment has its planned replicas ready (Progressing: RolloutComplete)."""
    return condition(c.json("get", "dcas", name, "-n", namespace), "Progressing").get("reason") == "RolloutComplete"


def router_ready(c: Cluster, namespace: str, name: str = "tiny") -> bool:
    dep = c.json("get", "deployment", f"{name}-router", "-n", namespace)
    return (dep.get("status") or {}).get("readyReplicas", 0) >= 1


def port_forward(c: Cluster, namespace: str, target: str, remote: int, log_path: Path) -> tuple[subprocess.Popen, str]:
    """``kubectl port-forward`` on a free loopback port; returns once a connection gets through."""
    port = free_port()
    proc = subprocess.Popen(
        [str(c.bin_dir / "kubectl"), f"--kubeconfig={c.kubeconfig}", "port-forward", "-n", namespace, target,
         f"{port}:{remote}", "--address=127.0.0.1"],
        stdout=log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: urllib.request.urlopen(f"{url}/healthz", timeout=2).status == 200, "the port-forward", 60)
    return proc, url


def pod_timeline(pod: dict, log_text: str) -> dict[str, float]:
    """Seconds from creation to scheduled, container started, model loaded (the worker's own
    line) and Ready, from the pod's status and its timestamped log."""

    def ts(s: str) -> float:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

    created = ts(pod["metadata"]["creationTimestamp"])
    out: dict[str, float] = {}
    sched = condition(pod, "PodScheduled")
    if sched.get("status") == "True":
        out["scheduled"] = ts(sched["lastTransitionTime"]) - created
    state = ((pod["status"].get("containerStatuses") or [{}])[0].get("state") or {}).get("running")
    if state:
        out["container started"] = ts(state["startedAt"]) - created
    for line in log_text.splitlines():
        if "loaded and warmed up" in line:
            out["model loaded"] = ts(line.split(" ", 1)[0][:26] + "+00:00") - created
            break
    ready = condition(pod, "Ready")
    if ready.get("status") == "True":
        out["Ready"] = ts(ready["lastTransitionTime"]) - created
    return out


def generate(router_url: str, prompt: str, timeout_s: float = 60.0):
    """One image through the openai client; returns (image item, response headers)."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{router_url}/v1", api_key="not-needed", timeout=timeout_s, max_retries=0)
    raw = client.images.with_raw_response.generate(prompt=prompt, response_format="b64_json")
    return raw.parse().data[0], raw.headers


# ---------------------------------------------------------------- the demo


def _pids() -> dict[str, int]:
    path = STATE / "pids.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _save_pid(name: str, pid: int) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    pids = _pids()
    pids[name] = pid
    (STATE / "pids.json").write_text(json.dumps(pids))


def up(args: argparse.Namespace) -> int:
    t_all = time.monotonic()
    stop_background()
    STATE.mkdir(parents=True, exist_ok=True)
    log("== cluster (control plane, real node, kwok) ==")
    c = cluster_up()
    log("== images into the node's containerd ==")
    load_images(CONTROL_IMAGE, WORKER_IMAGE)
    log("== helm install of the operator (2 replicas, leader-elected) ==")
    t = time.monotonic()
    install_operator(c)
    log(f"  operator pods Ready in {time.monotonic() - t:.1f}s")
    log("== Prometheus (pods discovered through the API server) ==")
    (prom, sync), prom_url = start_prometheus(c, STATE / "prometheus", [DEMO_NS, OPERATOR_NS])
    _save_pid("prometheus", prom.pid)
    _save_pid("prometheus targets", sync.pid)
    log(f"  {prom_url}")
    log("== the tiny cascade and its planning profile ==")
    if c.kubectl("get", "namespace", DEMO_NS, check=False):  # a fresh cascade, from the images just built
        c.kubectl("delete", "namespace", DEMO_NS, "--wait=true", "--timeout=120s")
    t_apply = time.monotonic()
    apply_tiny(c, DEMO_NS, prom_url)
    wait_until(lambda: cascade_ready(c, DEMO_NS) and router_ready(c, DEMO_NS), "the cascade Ready", 300)
    log(f"  Ready {time.monotonic() - t_apply:.1f}s after apply")
    wait_until(lambda: rolled_out(c, DEMO_NS), "every worker pod Ready", 300)
    log(f"  every worker pod Ready {time.monotonic() - t_apply:.1f}s after apply")
    pf, router_url = port_forward(c, DEMO_NS, "svc/tiny-router", 80, STATE / "port-forward.log")
    _save_pid("port-forward", pf.pid)
    print(f"export KUBECONFIG={c.kubeconfig}", flush=True)
    print(f"router: {router_url}", flush=True)
    log(c.kubectl("get", "pods", "-A", "-o", "wide", "--field-selector", f"spec.nodeName={node.NODE_NAME}"))

    log("== prompts through the openai client ==")
    out_dir = ROOT / "out" / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts = [
        "a red apple on a wooden table",
        "a photo of a cat",
        "three glass spheres stacked on top of a blue cube, left of a small green pyramid, seen from above",
        "an intricate isometric city with reflections at night, two bridges, and a person holding an umbrella",
    ]
    first = None
    for i, prompt in enumerate(prompts):
        t = time.monotonic()
        img, headers = generate(router_url, prompt)
        if first is None:
            first = time.monotonic() - t_apply
        png = out_dir / f"image-{i}.png"
        png.write_bytes(base64.b64decode(img.b64_json))
        extra = img.model_extra or {}
        log(f"  {png.relative_to(ROOT)}: model={headers.get('x-hadis-model')} escalated="
            f"{headers.get('x-hadis-escalated')} confidence={extra.get('confidence')} "
            f"({time.monotonic() - t:.2f}s)  {prompt!r}")  # fmt: skip
    log(f"  apply to first image: {first:.1f}s")
    log("== router overhead ==")
    o = router_overhead(c, DEMO_NS)
    log(f"  router overhead (median of {o['n']}, light images held to 1 s): through the router pod "
        f"{o['router_s'] * 1000:.0f} ms, straight to the light worker pod {o['direct_s'] * 1000:.0f} ms: "
        f"{o['overhead_s'] * 1000:+.0f} ms")  # fmt: skip
    if args.load_rps > 0:
        log("== a new idle cascade for the load step (the overhead's traffic may have moved its split) ==")
        router_url = fresh_cascade(c, prom_url, hold=True)
        held = load_step(c, router_url, args.load_rps, args.load_seconds)
        if args.compare_holding:
            shed, router_url = load_step_without_holding(c, prom_url, args.load_rps, args.load_seconds)
            log("  load step | refused | new pod Ready after the re-plan | admitted p99 (SLO 6 s)")
            for label, f in (("holding (default)", held), ("holdRequests: false", shed)):
                log(f"  {label} | {f['refused_share']:.1%} of {f['requests']} | {f['ready_after_replan_s']:.1f}s | "
                    f"{f['admitted_p99_s']:.2f}s")  # fmt: skip
    log(f"== demo up in {time.monotonic() - t_all:.1f}s; it keeps running: `make demo-down` stops it ==")
    print(f"export KUBECONFIG={c.kubeconfig}", flush=True)
    print(f"router: {router_url}", flush=True)
    return 0


# The load step's prompts, in turn: easy ones and a share of hard ones, as users send them. One
# prompt text over and over ranks as one hardness, so the router's cut would send it all to one
# tier, and a pod the re-plan adds to the other would never serve.
LOAD_PROMPTS = (
    "a cat",
    "a red apple on a wooden table",
    "a photo of a dog",
    "three glass spheres stacked on top of a blue cube, left of a small green pyramid, seen from above",
    "a cup of tea",
    "a blue car",
    "an intricate isometric city with reflections at night, two bridges, and a person holding an umbrella",
    "a green tree",
    "a small house",
    "a crowded night market with five vendors under paper lanterns, a cyclist and reflections in the puddles",
)


def worker_pods(c: Cluster, namespace: str, model: str) -> list[dict]:
    sel = f"app.kubernetes.io/component=worker,serving.hadis.dev/model={model}"
    return c.json("get", "pods", "-n", namespace, "-l", sel)["items"]


def load_step(
    c: Cluster, router_url: str, rate: float, seconds: float, namespace: str = DEMO_NS, after_s: float = 15.0
) -> dict:
    """Open-loop traffic at ``rate`` req/s; waits up to ``seconds`` for the re-plan, then for the
    new worker pod serving, then keeps the load on for ``after_s`` more seconds (the load lasts
    until then: a late re-plan's pod still meets the load it was planned for). Returns the figures: the share of
    requests refused (any answer but 200) over the whole step, the new pod's Ready time after
    the re-plan, the admitted requests' p99, and the new pod's ``timeline``."""
    import concurrent.futures
    import threading

    log(f"== load step: {rate:g} req/s, its re-plan awaited up to {seconds:g}s ==")
    models = ("tiny-light", "tiny-heavy")
    before = {p["metadata"]["name"] for m in models for p in worker_pods(c, namespace, m)}
    plan0 = (c.json("get", "dcas", "tiny", "-n", namespace).get("status") or {}).get("plan", {})
    log(f"  plan before: {plan0.get('replicasSummary')} at {plan0.get('demandRps')} images/s")
    stop = threading.Event()
    results: list[tuple[float, str, float]] = []  # (sent at, model or "error ...", seconds)

    def post(k: int) -> None:
        req = urllib.request.Request(
            f"{router_url}/v1/images/generations",
            data=json.dumps({"prompt": LOAD_PROMPTS[k % len(LOAD_PROMPTS)]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        sent = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                r.read()
                results.append((sent, r.headers.get("X-Hadis-Model", "?"), time.monotonic() - sent))
        except urllib.error.HTTPError as e:  # the router's JSON error: its code says why (overloaded, unavailable)
            with contextlib.suppress(ValueError, OSError):
                e.msg = f"{e.msg} ({json.loads(e.read()).get('error', {}).get('code')})"
            results.append((sent, f"error {e}", time.monotonic() - sent))
        except Exception as e:
            results.append((sent, f"error {e}", time.monotonic() - sent))

    def paced(pool) -> None:
        sent, t0 = 0, time.monotonic()
        while not stop.is_set():
            pool.submit(post, sent)
            sent += 1
            time.sleep(max(0.0, t0 + sent / rate - time.monotonic()))

    t0, wall0 = time.monotonic(), datetime.now(UTC).replace(microsecond=0)
    t_ready = t_plan = float("inf")
    new_pod, plan1, new_pod_log = None, None, ""
    served = 0.0
    with concurrent.futures.ThreadPoolExecutor(64) as pool, concurrent.futures.ThreadPoolExecutor(1) as pacer:
        pacer.submit(paced, pool)

        def replanned():
            st = c.json("get", "dcas", "tiny", "-n", namespace).get("status") or {}
            return st.get("plan") if st.get("plan", {}).get("replicasSummary") != plan0.get("replicasSummary") else None

        try:
            plan1 = wait_until(replanned, "a re-plan", seconds)
            t_plan = time.monotonic() - t0
            summary, demand = plan1.get("replicasSummary"), plan1.get("demandRps")
            log(f"  re-plan after {t_plan:.1f}s: {summary} at {demand:.1f} images/s")

            def ready_new_pod():  # of the model the re-plan added a replica to
                for p in (p for m in models for p in worker_pods(c, namespace, m)):
                    if p["metadata"]["name"] not in before and condition(p, "Ready").get("status") == "True":
                        return p
                return None

            new_pod = wait_until(ready_new_pod, "a new worker pod Ready", 180)
            t_ready = time.monotonic()
            if plan1.get("surgeReplicas"):
                log(f"  kept serving until it is Ready (gpuBudget.maxSurge): {plan1['surgeReplicas']}")
            served = wait_until(lambda: serving_or_gone(c, namespace, new_pod), "the new pod serving", 60)
            if served == "gone":  # a later plan drained it before the router sent it a request
                log(f"  new pod {new_pod['metadata']['name']} Ready {t_ready - t0:.1f}s into the step; a later "
                    "plan drained it before it served")  # fmt: skip
                served = 0.0
            else:
                log(f"  new {new_pod['metadata']['labels'][MODEL_LABEL]} pod {new_pod['metadata']['name']} Ready "
                    f"{t_ready - t0:.1f}s into the step; it served "
                    f"{served:.0f} request(s) so far")  # fmt: skip
            # its log (the model load line), read while it exists: a later plan may drain it
            new_pod_log = c.kubectl("logs", "--timestamps", "-n", namespace, new_pod["metadata"]["name"], check=False)
            time.sleep(after_s)  # the load goes on: recovery
            with contextlib.suppress(OSError):  # a pod slow to answer under the load keeps its last count
                served = worker_served(new_pod)
        finally:
            stop.set()
    for label, part in (("before it was Ready", [r for r in results if r[0] < t_ready]),
                        ("after", [r for r in results if r[0] >= t_ready])):  # fmt: skip
        errors = collections.Counter(m for _, m, _ in part if m.startswith("error"))
        log(f"  requests sent {label}: {len(part)}, served {len(part) - errors.total()}"
            + (f"; refused: {dict(errors)}" if errors else ""))  # fmt: skip
    log(f"  the new pod served {served:.0f} request(s)")
    timeline: dict[str, float] = {}
    if new_pod is not None:
        timeline = pod_timeline(live_pod(c, namespace, new_pod) or new_pod, new_pod_log)
        log("  new worker pod, seconds after it was created: "
            + ", ".join(f"{k} {v:.1f}" for k, v in timeline.items()))  # fmt: skip
    for at, message in plans_since(c, namespace, wall0):
        log(f"  re-planned {at:.0f}s into the step: {message}")
    admitted = sorted(secs for _, m, secs in results if not m.startswith("error"))
    figures = {
        "requests": len(results),
        "refused_share": (len(results) - len(admitted)) / max(1, len(results)),
        "ready_after_replan_s": t_ready - t0 - t_plan,
        "admitted_p99_s": admitted[min(len(admitted) - 1, int(0.99 * len(admitted)))] if admitted else float("nan"),
        "timeline": timeline,
        "surge": (plan1 or {}).get("surgeReplicas") or {},
        "replicas": ((plan0 or {}).get("replicas") or {}, (plan1 or {}).get("replicas") or {}),
        "new_pod_model": new_pod["metadata"]["labels"][MODEL_LABEL] if new_pod else None,
        "drained_after": surge_drained_after(c, namespace, new_pod) if new_pod else {},
    }
    log(
        f"  whole step: {figures['refused_share']:.1%} of {len(results)} requests refused; new pod Ready "
        f"{figures['ready_after_replan_s']:.1f}s after the re-plan; admitted p99 {figures['admitted_p99_s']:.2f}s"
    )
    if figures["drained_after"]:
        after = figures["drained_after"]
        log(
            f"  the pods kept beyond the plan drained {after['PodScheduled']:.0f}s after the new pod was scheduled, "
            f"{after['Ready']:.0f}s after it was Ready (earlier: a later plan's pod could not be placed)"
        )
    return figures


def live_pod(c: Cluster, namespace: str, pod: dict) -> dict | None:
    """The pod as it is now, or None once it is gone (a later plan drained it)."""
    out = c.kubectl("get", "pod", pod["metadata"]["name"], "-n", namespace, "--ignore-not-found", "-o", "json")
    return json.loads(out) if out.strip() else None


def serving_or_gone(c: Cluster, namespace: str, pod: dict) -> float | str | None:
    """Requests the pod has served once it has served one; "gone" once it no longer exists."""
    with contextlib.suppress(OSError):
        if served := worker_served(pod):
            return served
    return None if live_pod(c, namespace, pod) else "gone"


def surge_drained_after(c: Cluster, namespace: str, pod: dict, name: str = "tiny") -> dict[str, float]:
    """Seconds from ``pod``'s PodScheduled and Ready to the cascade's last SurgeDrained event (the
    pods a re-plan gave up drained: its new pods were Ready, or a later plan's could not be
    placed); empty without one. To the second: the stamps are."""
    stamps = [at for at, _ in cascade_events(c, namespace, "SurgeDrained", name)]
    now = live_pod(c, namespace, pod) or pod
    marks = {k: condition(now, k).get("lastTransitionTime") for k in ("PodScheduled", "Ready")}
    if not stamps or not all(marks.values()):
        return {}
    at = max(stamps)
    return {k: (at - _stamp(v)).total_seconds() for k, v in marks.items()}


def plans_since(c: Cluster, namespace: str, since: datetime, name: str = "tiny") -> list[tuple[float, str]]:
    """The cascade's Replanned events from ``since`` on: (seconds after it, message), in order."""
    events = cascade_events(c, namespace, "Replanned", name)
    return sorted(((at - since).total_seconds(), message) for at, message in events if at >= since)


def cascade_events(c: Cluster, namespace: str, reason: str, name: str = "tiny") -> list[tuple[datetime, str]]:
    """The events of that reason on the cascade now of this name (not a deleted namesake's, by
    its uid): (when, to the second, message)."""
    uid = c.json("get", "dcas", name, "-n", namespace)["metadata"]["uid"]
    events = c.json("get", "events", "-n", namespace, "--field-selector",
                    f"involvedObject.uid={uid},reason={reason}")["items"]  # fmt: skip
    stamped = ((e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp"), e) for e in events)
    return [(_stamp(t), e.get("message", "")) for t, e in stamped if t]


def _stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(microsecond=0)


def fresh_cascade(c: Cluster, prometheus_url: str, hold: bool, namespace: str = DEMO_NS) -> str:
    """The tiny cascade deleted and applied again (``spec.router.holdRequests: hold``) once the
    last step's arrivals have left the rate window, so a load step starts from the plan a new
    idle cascade gets (an idle cascade keeps the split of its last surge: moving GPUs back buys
    it nothing); returns the router URL of a new port-forward."""
    from hadis.operator import prom

    def demand() -> float:  # what a new cascade of this name would be planned for
        try:
            return prom.query_rate(prometheus_url, namespace, "tiny", "1m")
        except prom.NoSeries:
            return 0.0

    c.kubectl("delete", "dcas", "tiny", "-n", namespace, "--wait=true", "--timeout=180s")
    wait_until(lambda: not worker_pods(c, namespace, "tiny-light") + worker_pods(c, namespace, "tiny-heavy"),
               "the old worker pods gone", 180, every_s=1)  # fmt: skip
    wait_until(lambda: demand() < 0.5, "the last step's arrivals out of Prometheus's 1m window", 300, every_s=5)
    doc = tiny_cascade(prometheus_url)
    doc["spec"]["router"]["holdRequests"] = hold
    apply_tiny(c, namespace, prometheus_url, cascade=doc)
    wait_until(lambda: cascade_ready(c, namespace) and router_ready(c, namespace) and rolled_out(c, namespace),
               "the new cascade Ready and rolled out", 300)  # fmt: skip
    old = _pids().get("port-forward")
    if old:  # never killpg(-1): that is every process this user may signal
        with contextlib.suppress(OSError):
            os.killpg(old, signal.SIGTERM)
    pf, router_url = port_forward(c, namespace, "svc/tiny-router", 80, STATE / "port-forward.log")
    _save_pid("port-forward", pf.pid)
    return router_url


def load_step_without_holding(c: Cluster, prometheus_url: str, rate: float, seconds: float) -> tuple[dict, str]:
    """The same load step with ``holdRequests: false``, from a new cascade's plan as the first
    step was; then the default cascade back. Returns the figures and the new router URL."""
    log("== the same load step with holding off (holdRequests: false), from a new cascade ==")
    figures = load_step(c, fresh_cascade(c, prometheus_url, hold=False), rate, seconds)
    log("  the default cascade (holding on) back")
    return figures, fresh_cascade(c, prometheus_url, hold=True)


def router_overhead(c: Cluster, namespace: str, n: int = 12, name: str = "tiny") -> dict[str, float]:
    """Median seconds of one image through the router pod against one straight to a light worker
    pod (Triton's HTTP API), both from this host to pod IPs, sequential, same prompt and seed.
    The light worker holds each batch to its fixed time, so the difference is the router's cost
    (scoring, admission, the worker call, the JSON answer); only images the light model served
    without escalation count on the router's side."""
    import statistics

    import numpy as np
    import tritonclient.http as triton_http

    router = next(p for p in c.json("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/component=router")["items"]
              if condition(p, "Ready").get("status") == "True")  # fmt: skip
    light = next(p for p in worker_pods(c, namespace, "tiny-light") if condition(p, "Ready").get("status") == "True")
    prompt = "a cat"
    via_router: list[float] = []
    for _ in range(n * 3):
        req = urllib.request.Request(
            f"http://{router['status']['podIP']}:8080/v1/images/generations",
            data=json.dumps({"prompt": prompt, "seed": 7}).encode(),
            headers={"Content-Type": "application/json"},
        )
        t = time.monotonic()
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
            if r.headers["X-Hadis-Model"] == "tiny-light" and r.headers["X-Hadis-Escalated"] == "false":
                via_router.append(time.monotonic() - t)
        if len(via_router) >= n:
            break
    client = triton_http.InferenceServerClient(f"{light['status']['podIP']}:8000")
    direct: list[float] = []
    for _ in range(n):
        inp = triton_http.InferInput("PROMPT", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[prompt.encode()]], dtype=object))
        seed = triton_http.InferInput("SEED", [1, 1], "INT64")
        seed.set_data_from_numpy(np.array([[7]], dtype=np.int64))
        t = time.monotonic()
        client.infer("tiny-light", [inp, seed])
        direct.append(time.monotonic() - t)
    out = {"router_s": statistics.median(via_router), "direct_s": statistics.median(direct), "n": len(via_router)}
    out["overhead_s"] = out["router_s"] - out["direct_s"]
    return out


def worker_served(pod: dict) -> float:
    """Requests a worker pod has served, read from its Triton metrics at the pod's IP."""
    ip = pod["status"]["podIP"]
    text = urllib.request.urlopen(f"http://{ip}:8002/metrics", timeout=2).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("nv_inference_request_success{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def stop_background() -> None:
    for name, pid in _pids().items():
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGTERM)
        log(f"stopped {name}")
    (STATE / "pids.json").unlink(missing_ok=True)


def down(_args: argparse.Namespace) -> int:
    stop_background()
    state = CLUSTER_STATE / "state.json"
    if state.exists():
        st = json.loads(state.read_text())
        c = Cluster(st["kubeconfig"], Path(st["bin_dir"]))
        with contextlib.suppress(RuntimeError):
            c.kubectl("delete", "namespace", DEMO_NS, "--wait=false", check=False)
            c.helm("uninstall", RELEASE, "-n", OPERATOR_NS, "--wait")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="start the stack and show it serving")
    # 7 req/s: the idle split (3 light, 1 heavy) carries it while it rises, and its steady plan
    # (2 + 2 from 6.9 to 9.5 req/s) moves a GPU to heavy for quality once the rise has settled
    u.add_argument("--load-rps", type=float, default=7.0, help="rate of the load step (0: none)")
    u.add_argument("--load-seconds", type=float, default=180.0, help="longest wait for the load step's re-plan")
    u.add_argument(
        "--no-compare-holding", dest="compare_holding", action="store_false",
        help="skip the second load step with holdRequests: false (its figures beside holding's)",
    )  # fmt: skip
    u.set_defaults(func=up)
    sub.add_parser("down", help="stop what `up` left running (then make cluster-down)").set_defaults(func=down)
    st = sub.add_parser("sync-targets", help="keep the monitors' file_sd targets files current (background)")
    st.add_argument("--kubeconfig", required=True)
    st.add_argument("--bin-dir", type=Path, required=True)
    st.add_argument("--namespace", action="append", required=True)
    st.add_argument("--dir", type=Path, required=True, help="holds monitors.json; targets-N.json written there")
    st.set_defaults(func=lambda a: sync_targets(Cluster(a.kubeconfig, a.bin_dir), a.namespace, a.dir))
    args = p.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
