"""The local cluster's real node: a pod really runs on it, and ``cluster.py down`` leaves nothing
behind (mounts, network namespaces, iptables chains, the bridge, its route, shims).

Runs before the other cluster tests (file order) and leaves the cluster as it found it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = [sys.executable, str(ROOT / "hack" / "cluster.py")]
sys.path.insert(0, str(ROOT / "hack"))
import demo  # noqa: E402

from support import wait_until  # noqa: E402

pytestmark = pytest.mark.cluster


def _cluster(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([*CLUSTER, *args], capture_output=True, text=True)
    return out


def test_a_pod_runs_on_the_real_node_and_down_leaves_nothing_behind(tmp_path):
    was_running = (demo.CLUSTER_STATE / "state.json").exists()
    up = _cluster("up")
    assert up.returncode == 0, up.stderr[-3000:]
    state = json.loads((demo.CLUSTER_STATE / "state.json").read_text())
    c = demo.Cluster(up.stdout.strip().splitlines()[-1].split("=", 1)[1], Path(state["bin_dir"]))
    try:
        node = c.json("get", "node", demo.node.NODE_NAME)
        assert node["status"]["capacity"]["nvidia.com/gpu"] == "5"  # the demo's 4-GPU budget and 1 of maxSurge
        assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "sandbox-only", "namespace": "default"},
            "spec": {
                "nodeSelector": demo.LOCAL_SELECTOR,
                "tolerations": demo.LOCAL_TOLERATIONS,
                "containers": [{"name": "p", "image": demo.node.SANDBOX_IMAGE, "imagePullPolicy": "Never"}],
            },
        }
        c.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
        running = wait_until(
            lambda: (p := c.json("get", "pod", "sandbox-only")).get("status", {}).get("phase") == "Running" and p,
            "the pod Running", 120,
        )  # fmt: skip
        assert running["spec"]["nodeName"] == demo.node.NODE_NAME
        assert running["status"]["podIP"].startswith("10.85.0.")
        # the fake nodes are kept apart: a pod without the toleration never lands on the real node
        plain = {**pod, "metadata": {"name": "fake-only", "namespace": "default"}}
        plain["spec"] = {"containers": pod["spec"]["containers"]}
        c.kubectl("apply", "-f", "-", stdin=json.dumps(plain))
        placed = wait_until(lambda: c.json("get", "pod", "fake-only")["spec"].get("nodeName"), "scheduled", 60)
        assert placed.startswith("gpu-node-")
        _a_second_checkouts_up_is_refused_and_leaves_this_node_serving(c, tmp_path)
    finally:
        t0 = time.monotonic()
        down = _cluster("down")
        print(f"cluster down with a running pod: {time.monotonic() - t0:.1f}s")
    assert down.returncode == 0, down.stderr[-3000:]
    left = _cluster("leftovers")
    assert left.returncode == 0 and left.stdout == "", left.stdout
    if was_running:
        assert _cluster("up").returncode == 0


def _a_second_checkouts_up_is_refused_and_leaves_this_node_serving(c: demo.Cluster, tmp_path: Path) -> None:
    """Another checkout (a CI clone beside the developer's) shares the bridge, its address and
    the /run paths: its ``up`` is refused, and so is one that finds its own stale state (whose
    teardown would delete this node's bridge); this node's pods keep their network."""
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "state.json").write_text(
        json.dumps({"pids": {"etcd": 2**22 + 1}, "real_node": True, "bin_dir": "/nonexistent"})
    )
    for state_dir in (tmp_path / "fresh", stale):
        second = subprocess.run(
            [*CLUSTER, "up"], capture_output=True, text=True, env={**os.environ, "HADIS_CLUSTER_DIR": str(state_dir)}
        )
        assert second.returncode != 0 and "another local cluster's real node is running" in second.stderr, (
            second.stderr[-2000:]
        )
    assert subprocess.run(["ip", "link", "show", demo.node.BRIDGE], capture_output=True).returncode == 0
    assert c.json("get", "pod", "sandbox-only")["status"]["phase"] == "Running"
    assert c.json("get", "node", demo.node.NODE_NAME)["metadata"]["name"] == demo.node.NODE_NAME
