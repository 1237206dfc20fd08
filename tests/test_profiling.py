"""``hadis profile run``: FID from cached statistics, the grid assembled as the router mixes, the
run folder's resume, the Inception weights' checks and the profiling Job's manifests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from hadis.core.errors import DataError
from hadis.core.routing import percentiles
from hadis.profiling.fid import Moments, Reference, fid_of_features, frechet_distance
from hadis.profiling.grid import SHARES, PairInputs, assemble, mixed_features

ROOT = Path(__file__).resolve().parents[1]
HADIS = [sys.executable, "-m", "hadis.cli"]


def field_fid(x: np.ndarray, ref: np.ndarray) -> float:
    """torch-fidelity's FID of two feature sets (its eigenvalues of S1 @ S2)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    def stats(f):
        return {"mu": f.mean(axis=0), "sigma": np.cov(f, rowvar=False)}

    return fid_statistics_to_metric(stats(x), stats(ref), False)[KEY_METRIC_FID]


@pytest.mark.parametrize("n_ref", [400, 12])  # full rank, and fewer reference images than dimensions
def test_fid_from_moments_is_the_fields_fid(n_ref):
    rng = np.random.default_rng(n_ref)
    ref_x = rng.standard_normal((n_ref, 24)) * rng.uniform(0.5, 2.0, 24)
    x = rng.standard_normal((300, 24)) + 0.3
    ref = Reference.of(ref_x)
    assert ref.rank == min(24, n_ref - 1)
    assert fid_of_features(x, ref) == pytest.approx(field_fid(x, ref_x), rel=1e-7, abs=1e-7)
    # moments add: two halves summed give the whole
    halves = Moments.of(x[:100], ref) + Moments.of(x[100:], ref)
    assert frechet_distance(halves, ref) == pytest.approx(fid_of_features(x, ref), rel=1e-10)
    assert fid_of_features(ref_x, ref) == pytest.approx(0.0, abs=1e-8)


def _pair(seed: int = 3, p: int = 40, k: int = 3, d: int = 12) -> PairInputs:
    rng = np.random.default_rng(seed)
    return PairInputs(
        "light",
        "heavy",
        rng.standard_normal((p, k, d)) + 0.8,
        rng.standard_normal((p, k, d)) * 1.2,
        percentiles(rng.random(p)),
        percentiles(rng.random(p * k)).reshape(p, k),
    )


def test_every_configuration_equals_mixing_its_images_one_query_at_a_time():
    inputs = _pair()
    ref_x = np.random.default_rng(9).standard_normal((200, 12))
    ref = Reference.of(ref_x)
    rows = assemble(inputs, ref, lambda r, d: 1.0 + r + d)
    assert len(rows) == len(SHARES) ** 2
    for c in rows:
        direct = mixed_features(inputs, c.router_ratio, c.disc_ratio)
        assert c.quality == pytest.approx(field_fid(direct, ref_x), abs=2e-6), (c.router_ratio, c.disc_ratio)
        assert c.latency_s == pytest.approx(1.0 + c.router_ratio + c.disc_ratio)
    by = {(c.router_ratio, c.disc_ratio): c.quality for c in rows}
    light_only = fid_of_features(inputs.light.reshape(-1, 12), ref)
    heavy_only = fid_of_features(inputs.heavy.reshape(-1, 12), ref)
    assert by[(0.0, 0.0)] == pytest.approx(light_only, abs=1e-6)
    assert all(by[(1.0, d)] == pytest.approx(heavy_only, abs=1e-6) for d in SHARES)
    assert all(by[(r, 1.0)] == pytest.approx(heavy_only, abs=1e-6) for r in SHARES)


def test_a_routed_prompt_takes_all_its_heavy_images_and_the_rest_are_escalated_per_image():
    inputs = _pair(p=10, k=4)
    mix = mixed_features(inputs, 0.3, 0.0).reshape(10, 4, -1)
    routed = [i for i in range(10) if np.array_equal(mix[i], inputs.heavy[i])]
    assert sorted(routed) == sorted(np.argsort(inputs.score_pct)[-3:].tolist())  # the top 30% of scores
    mix = mixed_features(inputs, 0.0, 0.25).reshape(40, -1)
    escalated = [q for q in range(40) if np.array_equal(mix[q], inputs.heavy.reshape(40, -1)[q])]
    assert len(escalated) == 10 and all(inputs.conf_pct.reshape(-1)[q] < 0.25 for q in escalated)


def test_the_run_folder_refuses_a_rerun_with_other_settings(tmp_path):
    from hadis.profiling.store import check_manifest

    check_manifest(tmp_path, {"prompts_sha256": "a", "started": "then"})
    assert check_manifest(tmp_path, {"prompts_sha256": "a", "started": "now"})["started"] == "then"
    with pytest.raises(DataError, match="other settings: prompts_sha256 was 'a', now 'b'"):
        check_manifest(tmp_path, {"prompts_sha256": "b", "started": "now"})


def test_progress_lines_show_the_share_done_the_rate_and_an_eta():
    from hadis.profiling.store import Progress

    lines: list[str] = []
    bar = Progress("images x", 10, done=4, say=lines.append, every_s=0.0)
    time.sleep(0.01)
    bar.update(3)
    assert lines[0] == "images x: 4/10 cached from an earlier run"
    assert "7/10 (70%)" in lines[1] and "ETA 0:00:" in lines[1]
    bar.update(3)
    assert lines[-1].endswith("done") and "10/10 (100%)" in lines[-1]


def test_missing_or_unsafe_inception_weights_are_refused_clearly(tmp_path, monkeypatch):
    import torch

    from hadis.profiling.features import build, inception_weights

    monkeypatch.delenv("HADIS_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(DataError, match=r"nothing is downloaded at run time.*--feature-net random"):
        build("inception")
    with pytest.raises(DataError, match=re.escape(f"not found at {tmp_path}/none.pth")):
        inception_weights(tmp_path / "none.pth")
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"x": object()}, unsafe)  # a pickle that needs code to load
    with pytest.raises(DataError, match="not a plain tensor state dict"):
        inception_weights(unsafe)
    other = tmp_path / "other.pth"
    torch.save({"w": torch.zeros(2)}, other)
    with pytest.raises(DataError, match="not the FID Inception-v3 weights"):
        inception_weights(other)


def test_the_random_inception_is_the_fid_architecture_with_2048_features():
    from hadis.profiling.features import build

    net = build("random-inception")
    assert net.dim == 2048 and not net.meaningful and "random weights" in net.name
    out = net.extract(np.zeros((2, 64, 64, 3), dtype=np.uint8))
    assert out.shape == (2, 2048) and out.dtype == np.float32


def test_the_discriminator_moves_to_the_pipelines_device():
    from hadis.workers.pipelines import build_discriminator

    disc = build_discriminator("tiny", device="meta")  # a device that is not the CPU, on any machine
    assert {p.device.type for p in disc.vision.parameters()} == {"meta"}
    assert {p.device.type for p in disc.head.parameters()} == {"meta"}
    assert disc.device.type == "meta"


# ---------------------------------------------------------------------------- the whole run


def _inputs(tmp: Path, n_prompts: int = 24) -> tuple[Path, Path]:
    from PIL import Image

    prompts = tmp / "prompts.txt"
    lines = (ROOT / "data/hadis/prompts/imagenet1k_5k.txt").read_text().splitlines()[:n_prompts]
    prompts.write_text("\n".join(lines) + "\n")
    ref = tmp / "reference"
    ref.mkdir()
    rng = np.random.default_rng(0)
    for i in range(32):  # synthetic reference images: smooth colour fields with noise
        base = rng.uniform(0, 255, 3) * np.linspace(0.3, 1.0, 64)[:, None, None]
        img = np.clip(base + rng.normal(0, 20, (64, 64, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(ref / f"{i:03d}.png")
    return prompts, ref


def _run_args(prompts: Path, ref: Path, out: Path) -> list[str]:
    return [
        *HADIS, "profile", "run", "--model", "tiny-light", "--model", "tiny-heavy", "--prompts", str(prompts),
        "--reference-images", str(ref), "--device", "cpu", "--feature-net", "random", "--batch-sizes", "1,2",
        "--repeats", "1", "--out", str(out),
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def _quality(out: Path) -> list[tuple]:
    from hadis.core.pareto import parse_table

    rows = parse_table((out / "grid.csv").read_text(), "grid.csv")
    return [(c.light, c.heavy, c.router_ratio, c.disc_ratio, c.quality) for c in rows]


@pytest.mark.dataplane
def test_profile_run_resumes_after_a_kill_and_gives_the_same_result(tmp_path):
    prompts, ref = _inputs(tmp_path)
    clean = tmp_path / "clean"
    done = subprocess.run(_run_args(prompts, ref, clean), env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "grid: 121 configurations' FID" in done.stderr
    assert "random-init test network (FID values mean nothing)" in done.stderr
    assert "ETA" in done.stderr

    # the acceptance's second half: the planner plans with the written ConfigMap
    cm = clean / "hadis-profile-configmap.yaml"
    plan_args = ["plan", "--configmap", str(cm), "--gpus", "4", "--slo", "5", "--rate", "2", "--json"]
    plan = subprocess.run([*HADIS, *plan_args], env=_env(), capture_output=True, text=True, timeout=120)
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["light"] == "tiny-light"
    doc = yaml.safe_load(cm.read_text())
    prov = yaml.safe_load(doc["data"]["profile.yaml"])["provenance"]
    assert prov["prompts"]["count"] == 24 and len(prov["prompts"]["sha256"]) == 64
    assert prov["reference_images"]["count"] == 32 and prov["fid_meaningful"] is False
    assert {"torch", "diffusers", "hadis"} <= set(prov["versions"]) and prov["device"].startswith("cpu")
    assert "serving.hadis.dev/prompts-sha256" in doc["metadata"]["annotations"]
    router = yaml.safe_load((clean / "hadis-profile-router-tiny-light-configmap.yaml").read_text())
    assert json.loads(router["data"]["router-model.json"])["mode"] == "learned"

    # killed while it makes images, then run again into the same folder
    resumed = tmp_path / "resumed"
    proc = subprocess.Popen(_run_args(prompts, ref, resumed), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    images = resumed / "images" / "tiny-light"
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline and len(list(images.glob("*.png"))) < 8:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (resumed / "hadis-profile-configmap.yaml").exists(), "the run finished before it could be killed"
    before = {p: p.stat().st_mtime_ns for p in resumed.glob("images/*/*.png")}
    assert before, "no image was made before the kill"
    again = subprocess.run(_run_args(prompts, ref, resumed), env=_env(), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "cached from an earlier run" in again.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in before.items()), "an image made before the kill was made again"
    assert not list(resumed.rglob("*.tmp*")), "a half-written file was left behind"
    for png in sorted(clean.glob("images/*/*.png")):
        assert (resumed / png.relative_to(clean)).read_bytes() == png.read_bytes(), png.name
    assert _quality(resumed) == _quality(clean)
    assert (resumed / "router/tiny-light.json").read_text() == (clean / "router/tiny-light.json").read_text()


def test_a_run_needs_two_variants_and_enough_prompts(tmp_path):
    prompts, ref = _inputs(tmp_path, n_prompts=5)
    out = subprocess.run(_run_args(prompts, ref, tmp_path / "o"), env=_env(), capture_output=True, text=True)
    assert out.returncode == 2 and "needs at least 10 prompts" in out.stderr
    args = _run_args(prompts, ref, tmp_path / "o")
    i = args.index("tiny-heavy")
    one = args[: i - 1] + args[i + 1 :]  # only --model tiny-light
    out = subprocess.run(one, env=_env(), capture_output=True, text=True)
    assert out.returncode == 2 and "at least two variants" in out.stderr


# ---------------------------------------------------------------------------- the Job


def _job_settings(tmp_path, **kw):
    from hadis.profiling.job import JobSettings

    tmp_path.mkdir(parents=True, exist_ok=True)
    prompts, ref = _inputs(tmp_path, 12)
    base = dict(name="pair", namespace="prof", models=("tiny-light", "tiny-heavy"), prompts=prompts,
                reference_images=ref, device="cpu", feature_net="random")  # fmt: skip
    base.update(kw)
    return JobSettings(**base)


def test_the_job_resumes_from_its_claim_and_may_write_only_configmaps(tmp_path):
    from hadis.profiling.job import job_manifests

    objs = {o["kind"]: o for o in job_manifests(_job_settings(tmp_path))}
    assert set(objs) == {"PersistentVolumeClaim", "ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Job"}
    assert objs["Role"]["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch"]}
    ]
    pod = objs["Job"]["spec"]["template"]["spec"]
    assert pod["volumes"][0] == {"name": "work", "persistentVolumeClaim": {"claimName": "pair-work"}}
    args = pod["containers"][0]["args"]
    assert args[args.index("--out") + 1] == "/work/run" and "--apply" in args
    assert len(objs["ConfigMap"]["binaryData"]) == 32 and "prompts.txt" in objs["ConfigMap"]["data"]
    assert "limits" not in pod["containers"][0]["resources"]  # cpu: no GPU asked for
    sec = pod["containers"][0]["securityContext"]
    assert sec["readOnlyRootFilesystem"] and sec["capabilities"] == {"drop": ["ALL"]}
    gpu = {o["kind"]: o for o in job_manifests(_job_settings(tmp_path / "g", device="cuda"))}
    assert gpu["Job"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": 1}


def test_the_job_refuses_what_it_cannot_run(tmp_path):
    from hadis.profiling.job import job_manifests

    with pytest.raises(DataError, match="exactly one of --reference-images and --reference-claim"):
        job_manifests(_job_settings(tmp_path, reference_claim="coco:val"))
    with pytest.raises(DataError, match="nothing is downloaded at run time"):
        job_manifests(_job_settings(tmp_path / "b", feature_net="inception"))
    big = tmp_path / "big"
    big.mkdir()
    rng = np.random.default_rng(0)
    from PIL import Image

    for i in range(6):
        Image.fromarray((rng.random((300, 300, 3)) * 255).astype(np.uint8)).save(big / f"{i}.png")
    with pytest.raises(DataError, match="more than a ConfigMap holds"):
        job_manifests(_job_settings(tmp_path / "c", reference_images=big))
