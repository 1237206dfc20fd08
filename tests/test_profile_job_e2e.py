"""``hadis profile job`` on the local cluster: the rendered Job runs ``hadis profile run`` in the
worker image on the real node (tiny variants on the CPU, the random feature network), its pod
is deleted mid-run, the Job's next pod resumes from the claim, and the profile ConfigMap it
writes plans."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))
import demo  # noqa: E402
import node  # noqa: E402

from realpods import restricted_namespace  # noqa: E402
from support import wait_until  # noqa: E402

pytestmark = pytest.mark.realpods
HADIS = [sys.executable, "-m", "hadis.cli"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def _claim(c: demo.Cluster, namespace: str, volume: str, folder: Path) -> None:
    """A PersistentVolume on a node folder (an administrator's object) bound to ``work``."""
    pv = {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(folder), "type": "Directory"},
                 "claimRef": {"namespace": namespace, "name": "work"}},
    }  # fmt: skip
    pvc = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "work", "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": volume,
                 "resources": {"requests": {"storage": "1Gi"}}},
    }  # fmt: skip
    c.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": [pv, pvc]}))
    wait_until(lambda: c.json("get", "pvc", "work", "-n", namespace)["status"].get("phase") == "Bound",
                    "the work claim bound", 60)  # fmt: skip


def _inputs(tmp: Path) -> tuple[Path, Path]:
    from PIL import Image

    prompts = tmp / "prompts.txt"
    prompts.write_text("\n".join((ROOT / "data/hadis/prompts/imagenet1k_5k.txt").read_text().splitlines()[:24]) + "\n")
    ref = tmp / "reference"
    ref.mkdir()
    rng = np.random.default_rng(1)
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(ref / f"{i:02d}.png")
    return prompts, ref


def test_the_profiling_job_resumes_after_its_pod_is_deleted_and_writes_a_profile_that_plans(kube, tmp_path):
    state = json.loads((demo.CLUSTER_STATE / "state.json").read_text())
    if not state.get("real_node"):
        pytest.fail("the local cluster has no real node: `make cluster-down`, then run the tests again")
    c = demo.Cluster(kube.kubeconfig, Path(state["bin_dir"]))
    demo.load_images(demo.WORKER_IMAGE)
    suffix = uuid.uuid4().hex[:5]
    ns, volume = f"profjob-{suffix}", f"hadis-profile-{suffix}"
    folder = node.MODEL_CACHE.parent / f"profile-{suffix}"
    folder.mkdir(parents=True)
    os.chown(folder, node.IMAGE_USER, node.IMAGE_USER)
    prompts, ref = _inputs(tmp_path)
    try:
        restricted_namespace(c, ns)
        _claim(c, ns, volume, folder)
        render = subprocess.run(
            [*HADIS, "profile", "job", "--name", "prof", "--namespace", ns, "--model", "tiny-light", "--model",
             "tiny-heavy", "--prompts", str(prompts), "--reference-images", str(ref), "--device", "cpu",
             "--feature-net", "random", "--images-per-prompt", "2", "--batch-sizes", "1,2", "--repeats", "1",
             "--claim", "work", "--image", demo.WORKER_IMAGE, "--node-selector", "node.hadis.dev/local=true",
             "--toleration", "node.hadis.dev/local:NoSchedule"],
            env=_env(), capture_output=True, text=True, check=True,
        )  # fmt: skip
        out = c.kubectl("apply", "--server-side", "-n", ns, "-f", "-", stdin=render.stdout)
        assert "job.batch/prof serverside-applied" in out, out
        images = folder / "run" / "images" / "tiny-light"
        wait_until(lambda: len(list(images.glob("*.png"))) >= 4, "the first images on the claim", 300, 0.1)
        first = c.json("get", "pods", "-n", ns, "-l", "job-name=prof")["items"][0]["metadata"]["name"]
        c.kubectl("delete", "pod", first, "-n", ns, "--grace-period=1", "--wait=false")
        wait_until(
            lambda: any(x["type"] == "Complete" and x["status"] == "True"
                        for x in c.json("get", "job", "prof", "-n", ns).get("status", {}).get("conditions", [])),
            "the Job complete", 600, 1.0,
        )  # fmt: skip
        pods = c.json("get", "pods", "-n", ns, "-l", "job-name=prof")["items"]
        last = next(p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Succeeded")
        assert last != first
        log = c.kubectl("logs", last, "-n", ns)
        assert "in an earlier run" in log, log[-3000:]  # the new pod resumed from the claim
        assert "applied ConfigMap prof" in log
        cm = tmp_path / "prof.yaml"
        cm.write_text(c.kubectl("get", "configmap", "prof", "-n", ns, "-o", "yaml"))
        plan = subprocess.run([*HADIS, "plan", "--configmap", str(cm), "--gpus", "2", "--slo", "5", "--rate", "1"],
                              env=_env(), capture_output=True, text=True)  # fmt: skip
        assert plan.returncode == 0 and "tiny-light->tiny-heavy" in plan.stdout, plan.stdout + plan.stderr
        assert c.json("get", "configmap", "prof-router-tiny-light", "-n", ns)["data"]["router-model.json"]
        print(f"\nprofiling Job: pod {first} deleted mid-run, {last} resumed and wrote ConfigMap prof")
    finally:
        c.kubectl("delete", "namespace", ns, "--wait=true", "--timeout=120s", check=False)
        c.kubectl("delete", "persistentvolume", volume, "--wait=false", check=False)
        shutil.rmtree(folder, ignore_errors=True)
