"""The product as deployed, shared by the real-pod test modules: the stack and the helpers that
drive and read it.

A stack (conftest's ``stack`` fixture, one per module) is the helm-installed operator (2
replicas) and the tiny cascade it creates, every pod in a container on the local cluster's real
node, in namespaces that enforce Pod Security's ``restricted`` profile: the API server's own
admission refuses any pod that asks for more. The workers' weights are cached in a
PersistentVolumeClaim bound to the node's cache folder (a ``hostPath`` volume in a pod is not
allowed under ``restricted``; a claim is).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))
import demo  # noqa: E402  (hack/demo.py: what make demo does, one implementation)
import node  # noqa: E402

from support import wait_until  # noqa: E402

SIMPLE = ["a cat", "a red apple", "a dog", "a cup of tea", "a blue car", "a green tree", "a small house", "a bird"]
HARD = [
    "three glass spheres stacked on top of a blue cube, left of a small green pyramid, seen from above",
    "an intricate isometric city with reflections at night, two bridges, and a person holding an umbrella",
]
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
CACHE_CLAIM = "model-cache"
# The stack runs under a shared-cluster policy (the chart's ``policy`` values): our images only, no
# hostPath cache, only the local node's taint tolerated. Every real-pod test passes under it.
POLICY = {"imagePrefixes": ["ghcr.io/hadis-serving/"], "hostPathRoots": [], "tolerationKeys": [node.TAINT_KEY]}


@dataclass
class Stack:
    cluster: demo.Cluster
    namespace: str
    operator_namespace: str
    release: str
    router_url: str  # through a kubectl port-forward (it passes through the API server)
    prometheus_url: str = ""
    background: list[subprocess.Popen] = field(default_factory=list)  # [Prometheus, its target sync, ...]


def restricted_namespace(c: demo.Cluster, name: str) -> None:
    labels = [f"{k}={v}" for k, v in RESTRICTED.items()]
    c.kubectl("create", "namespace", name)
    c.kubectl("label", "namespace", name, *labels, "--overwrite")


def cache_claim(c: demo.Cluster, namespace: str, volume: str) -> None:
    """A PersistentVolume on the node's cache folder (an administrator's object) and its claim."""
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume},
        "spec": {
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteOnce"],  # one node: every pod of the cascade runs there
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": str(node.MODEL_CACHE), "type": "Directory"},
            "claimRef": {"namespace": namespace, "name": CACHE_CLAIM},
        },
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": CACHE_CLAIM, "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "volumeName": volume,
            "resources": {"requests": {"storage": "10Gi"}},
        },
    }
    c.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": [pv, pvc]}))
    # bound before any pod asks for it (a pod scheduled against an unbound claim waits on the
    # scheduler's back-off)
    wait_until(
        lambda: c.json("get", "pvc", CACHE_CLAIM, "-n", namespace)["status"].get("phase") == "Bound",
        "the cache claim bound", 60,
    )  # fmt: skip


@contextlib.contextmanager
def running_stack(kube, tmp: Path) -> Iterator[Stack]:
    """The stack, up and serving (conftest's ``stack`` fixture: one per module)."""
    state = json.loads((demo.CLUSTER_STATE / "state.json").read_text())
    if not state.get("real_node"):
        pytest.fail("the local cluster has no real node: `make cluster-down`, then run the tests again")
    c = demo.Cluster(kube.kubeconfig, Path(state["bin_dir"]))
    demo.load_images(demo.CONTROL_IMAGE, demo.WORKER_IMAGE)
    suffix = uuid.uuid4().hex[:5]
    ns, op_ns, release = f"realpods-{suffix}", f"realpods-op-{suffix}", f"rp-{suffix}"
    volume = f"hadis-cache-{suffix}"
    background: list[subprocess.Popen] = []
    try:
        restricted_namespace(c, ns)
        restricted_namespace(c, op_ns)
        demo.install_operator(c, release=release, namespace=op_ns, watch=[ns], policy=POLICY)
        procs, prom_url = demo.start_prometheus(c, tmp / "prometheus", [ns, op_ns], release, op_ns)
        background += procs
        cache_claim(c, ns, volume)
        t0 = time.monotonic()
        doc = demo.tiny_cascade(prom_url)
        doc["spec"]["modelCache"] = {"persistentVolumeClaim": {"claimName": CACHE_CLAIM}}
        demo.apply_tiny(c, ns, prom_url, cascade=doc)
        wait_until(lambda: demo.cascade_ready(c, ns) and demo.router_ready(c, ns), "the cascade Ready", 300)
        wait_until(lambda: demo.rolled_out(c, ns), "every worker pod Ready", 300)
        print(f"\ncascade applied to every pod Ready: {time.monotonic() - t0:.1f}s")
        pf, router_url = demo.port_forward(c, ns, "svc/tiny-router", 80, tmp / "port-forward.log")
        background.append(pf)
        yield Stack(c, ns, op_ns, release, router_url, prom_url, background)
    finally:
        for p in background:
            p.terminate()
        # the cascades first, while the operator still holds its RoleBinding in the namespace: a
        # namespace deletion removes the binding too, and the finalizer then can never be taken off
        c.kubectl("delete", "dcas", "--all", "-n", ns, "--wait=true", "--timeout=120s", check=False)
        c.kubectl("delete", "namespace", ns, "--wait=true", "--timeout=120s", check=False)
        _unstick(c, ns, op_ns)
        c.kubectl("delete", "persistentvolume", volume, "--wait=false", check=False)
        subprocess.run([str(c.bin_dir / "helm"), f"--kubeconfig={c.kubeconfig}", "uninstall", release, "-n", op_ns,
                        "--wait"], capture_output=True, check=False)  # fmt: skip
        c.kubectl("delete", "namespace", op_ns, "--wait=false", check=False)


def _unstick(c: demo.Cluster, ns: str, op_ns: str) -> None:
    """A namespace still there after its deletion's timeout: say why (the cascades' finalizers,
    the operator's log), then drop the finalizers so the next module starts clean."""
    if c.kubectl("get", "namespace", ns, "--ignore-not-found", check=False).strip() == "":
        return
    cascades = c.json("get", "dcas", "-n", ns).get("items", [])
    print(f"\nnamespace {ns} still terminating; cascades: "
          f"{[(d['metadata']['name'], d['metadata'].get('finalizers')) for d in cascades]}")  # fmt: skip
    for p in pods(c, op_ns):
        log = c.kubectl("logs", "-n", op_ns, p["metadata"]["name"], "--tail=40", check=False)
        print(f"--- {p['metadata']['name']} (last 40 lines)\n{log}")
    for d in cascades:
        c.kubectl("patch", "dcas", d["metadata"]["name"], "-n", ns, "--type=merge",
                  "-p", '{"metadata":{"finalizers":null}}', check=False)  # fmt: skip


def pods(c: demo.Cluster, namespace: str, selector: str = "") -> list[dict]:
    args = ["get", "pods", "-n", namespace] + (["-l", selector] if selector else [])
    return c.json(*args)["items"]


def ready(p: dict) -> bool:
    return demo.condition(p, "Ready").get("status") == "True" and not p["metadata"].get("deletionTimestamp")


def post(router_url: str, prompt: str, timeout_s: float = 30.0) -> tuple[int, dict, float]:
    """One request without the openai client (for load): status, headers (and the first image's
    degraded_reason, if any, as ``reason``), seconds. No answer at all (refused, reset, timed
    out) is status 0, with the error as ``error``: a request lost, not one refused."""
    req = urllib.request.Request(
        f"{router_url}/v1/images/generations",
        data=json.dumps({"prompt": prompt}).encode(),
        headers={"Content-Type": "application/json"},
    )
    t = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            body = json.loads(r.read())
            return r.status, {**r.headers, "reason": body["data"][0].get("degraded_reason")}, time.monotonic() - t
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), time.monotonic() - t
    except OSError as e:  # URLError, a reset, a timeout: no answer
        return 0, {"error": repr(e)}, time.monotonic() - t


class Traffic:
    """Open-loop requests at ``rate`` per second from a background thread, until stopped."""

    def __init__(self, url: str, rate: float, prompts: list[str]):
        self.url, self.rate, self.prompts = url, rate, prompts
        self.stop = threading.Event()
        self.pool = concurrent.futures.ThreadPoolExecutor(32)
        self.sent: list[concurrent.futures.Future] = []
        self.sent_at: list[float] = []  # wall clock, to compare with pods' deletion times
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0, k = time.monotonic(), 0
        while not self.stop.is_set():
            self.sent_at.append(time.time())
            self.sent.append(self.pool.submit(post, self.url, self.prompts[k % len(self.prompts)], 30.0))
            k += 1
            time.sleep(max(0.0, t0 + k / self.rate - time.monotonic()))

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop.set()
        self.thread.join()
        self.pool.shutdown(wait=True)

    def results(self) -> list[tuple[int, dict, float]]:
        return [f.result() for f in self.sent]
