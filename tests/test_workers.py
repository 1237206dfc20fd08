"""Worker specs, the tiny pipelines, and 'hadis up --tiny' as a user runs it."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from docs import documented
from hadis.core.errors import DataError
from hadis.workers.spec import PIPELINES, SPECS_DIR, find_spec, load_spec, parse_spec

WORKERS = SPECS_DIR


def test_shipped_specs_parse():
    names = {p.stem for p in WORKERS.glob("*.yaml")}
    assert names >= {
        "sdxl-lightning-2step", "sd3.5-large-turbo", "sd3.5-medium", "sd3.5-large", "sd-turbo", "sd-v1.5", "sdxl",
        "tiny-light", "tiny-heavy",
    }  # fmt: skip
    for p in WORKERS.glob("*.yaml"):
        spec = load_spec(p)
        assert spec.name == p.stem and spec.pipeline in PIPELINES
    assert find_spec("tiny-light", WORKERS).discriminator.enabled
    assert not find_spec("sd3.5-large", WORKERS).discriminator.enabled  # the heaviest is never escalated from


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ("pipeline: FluxPipeline", "pipeline"),
        ("steps: 0", "steps"),
        ("resolution: 100x100", "resolution"),
        ("dtype: int8", "dtype"),
        ("maxBatch: 0", "maxBatch"),
        ("discriminator: {enabled: true, weights: head.pt}", "discriminator.weights"),
    ],
)
def test_bad_specs_name_the_field(change, field):
    text = (WORKERS / "tiny-light.yaml").read_text()
    key = change.split(":")[0]
    lines = [line for line in text.splitlines() if not line.startswith(key + ":")] + [change]
    with pytest.raises(DataError) as err:
        parse_spec("\n".join(lines), "spec.yaml")
    assert err.value.field == field


def test_unknown_variant_lists_the_known_ones():
    with pytest.raises(DataError, match=r"known: .*tiny-light"):
        find_spec("nope", WORKERS)


def test_tiny_pipeline_is_deterministic_and_batches():
    from hadis.workers.pipelines import build_discriminator, load_pipeline
    from hadis.workers.server import make_generate

    spec = find_spec("tiny-light", WORKERS)
    generate = make_generate(spec, load_pipeline(spec), build_discriminator("tiny"))
    a = generate(["a red ball", "a blue cube"], [1, 2])
    b = generate(["a red ball"], [1])
    assert a["IMAGE"][0] == b["IMAGE"][0]  # same seed, same image, batched or not
    assert a["IMAGE"][0] != a["IMAGE"][1]
    assert all(0.0 <= c <= 1.0 for c in a["CONFIDENCE"])
    assert a["DISCRIMINATOR"] == [b"random", b"random"]
    import io

    from PIL import Image

    assert Image.open(io.BytesIO(a["IMAGE"][0])).size == (64, 64)


def test_weights_are_fetched_into_the_cache_once_and_load_from_it(tmp_path):
    """The tiny variant's fetch saves the pipeline (the stand-in for a hub download); a second
    fetch finds it; the pipeline loaded from the cache draws what the in-process one draws."""
    from hadis.workers.cache import MARKER, complete, entry_dir, fetch
    from hadis.workers.pipelines import load_pipeline
    from hadis.workers.server import make_generate

    spec = find_spec("tiny-light", WORKERS)
    first = fetch(spec, tmp_path)
    assert first.downloaded and first.bytes > 0 and first.path == entry_dir(tmp_path, spec)
    assert (first.path / "model_index.json").exists() and complete(first.path)["revision"] == "random-weights"
    again = fetch(spec, tmp_path)
    assert not again.downloaded and again.path == first.path and again.bytes == first.bytes
    cached = make_generate(spec, load_pipeline(spec, weights=first.path))(["a red ball"], [3])
    built = make_generate(spec, load_pipeline(spec))(["a red ball"], [3])
    assert cached["IMAGE"] == built["IMAGE"]
    # a copy cut off before its marker is not taken for complete: the next fetch replaces it
    (first.path / MARKER).unlink()
    assert complete(first.path) is None
    assert fetch(spec, tmp_path).downloaded
    assert not [p for p in first.path.parent.iterdir() if ".partial-" in p.name]


def test_a_fetch_that_cannot_reach_the_hub_fails_clearly_and_leaves_no_partial_copy(tmp_path):
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # no hub here: offline, so nothing is even tried
    run = subprocess.run([sys.executable, "-m", "hadis.cli", "worker", "fetch", "--model", "sd-turbo",
                          "--cache", str(tmp_path)], capture_output=True, text=True, env=env)  # fmt: skip
    assert run.returncode == 1
    assert "error: could not fetch sd-turbo from stabilityai/sd-turbo" in run.stderr
    assert "Traceback" not in run.stderr
    assert not [p for p in tmp_path.rglob("*") if ".partial-" in p.name]


def test_the_revision_names_the_cache_entry():
    from hadis.workers.cache import entry_dir, revision_of

    hub = find_spec("sd3.5-large", WORKERS)
    assert revision_of(hub) == "main"  # unpinned
    assert entry_dir(Path("/c"), hub, "abc123") == Path("/c/sd3.5-large/abc123")


@pytest.mark.parametrize("revision", ["..", "."])
def test_a_revision_naming_the_cache_root_or_the_model_folder_is_refused_and_nothing_is_removed(tmp_path, revision):
    """``revision: ".."`` made the entry the cache root, so clearing a cut-off copy removed every
    tenant's weights; ``"."`` removed the model's other revisions. Both are refused before any
    file is touched, by the code and (for a cascade) by the CRD."""
    from hadis.workers.cache import UnsafeCachePath, fetch

    spec = find_spec("tiny-light", WORKERS)
    other = tmp_path / "another-model" / "abc123"
    other.mkdir(parents=True)
    (other / "weights.bin").write_bytes(b"someone else's")
    sibling = tmp_path / "tiny-light" / "v1"
    sibling.mkdir(parents=True)
    with pytest.raises(UnsafeCachePath, match="names no folder of its own"):
        fetch(spec, tmp_path, revision)
    assert (other / "weights.bin").read_bytes() == b"someone else's" and sibling.is_dir()
    run = subprocess.run([sys.executable, "-m", "hadis.cli", "worker", "fetch", "--model", "tiny-light",
                          "--cache", str(tmp_path), "--revision", ".."], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 1 and "error: revision '..' names no folder of its own" in run.stderr, run.stderr
    assert (other / "weights.bin").exists()


def test_a_cache_clean_up_never_leaves_its_entry(tmp_path):
    """The last guard: a folder to delete must resolve two levels under the cache root."""
    from hadis.workers.cache import UnsafeCachePath, _remove_entry

    (tmp_path / "m" / "r").mkdir(parents=True)
    for outside in (tmp_path, tmp_path / "m", tmp_path / "m" / "r" / ".." / ".."):
        with pytest.raises(UnsafeCachePath):
            _remove_entry(tmp_path, outside)
    assert (tmp_path / "m").is_dir()
    _remove_entry(tmp_path, tmp_path / "m" / "r")
    assert not (tmp_path / "m" / "r").exists()


def test_discriminator_weights_load_from_safetensors(tmp_path):
    import torch
    from safetensors.torch import save_file

    from hadis.workers.pipelines import build_discriminator

    head = {"head.0.weight": torch.zeros(256, 512), "head.0.bias": torch.zeros(256),
            "head.2.weight": torch.zeros(2, 256), "head.2.bias": torch.tensor([0.0, 2.0])}  # fmt: skip
    path = tmp_path / "disc.safetensors"
    save_file(head, str(path))
    disc = build_discriminator("tiny", str(path))
    assert disc.source.startswith("safetensors:")
    conf = disc.confidence(np.zeros((1, 64, 64, 3), dtype=np.uint8))
    assert conf[0] == pytest.approx(1 / (1 + np.exp(-2.0)), rel=1e-5)  # softmax([0, 2])[1]


def _generate(url: str, k: int) -> int:
    req = urllib.request.Request(
        f"{url}/v1/images/generations", data=json.dumps({"prompt": f"a paper boat {k}", "seed": k}).encode()
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.dataplane
def test_hadis_up_tiny_serves_the_moment_it_prints_the_router_and_stops_cleanly(tmp_path):
    """ "Ready" means a request sent then is served: the workers' models are loaded, not only their
    servers up (Triton answers /v2/health/ready while the model is still loading)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hadis.cli", "up", "--tiny", "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("router: http://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() else "")
        url = line.split(" ", 1)[1]
        # the request docs/architecture.md shows, as written there
        curl = next(c for c in documented("docs/architecture.md", "curl -s").splitlines() if c.startswith("curl"))
        shown = subprocess.run(["bash", "-c", curl.replace("http://127.0.0.1:PORT", url)], capture_output=True,
                               text=True, timeout=60, check=False)  # fmt: skip
        assert shown.returncode == 0 and json.loads(shown.stdout)["data"][0]["b64_json"], shown
        with concurrent.futures.ThreadPoolExecutor(4) as pool:  # at once, 4 at a time
            statuses = list(pool.map(lambda k: _generate(url, k), range(12)))
        assert statuses == [200] * 12, (statuses, (tmp_path / "router.log").read_text()[-2000:])
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as r:
            assert r.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        err = proc.stderr.read()
        assert "stopped" in err
        with pytest.raises(OSError):  # every part has exited, the router with them
            urllib.request.urlopen(f"{url}/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_profile_marks_out_of_memory_sizes_infeasible():
    from hadis.workers.profiler import BatchResult, build_profile

    spec = find_spec("sd3.5-large", WORKERS)
    results = [
        BatchResult(1, (1.0, 1.2, 1.1), 2**30),
        BatchResult(2, (1.9, 2.0, 2.4), 2**31),
        BatchResult(4, oom=True),
        BatchResult(8, oom=True),
    ]
    profile = build_profile(spec, "test-gpu", results)
    m = profile.model("sd3.5-large")
    assert m.batch_latency(1) == pytest.approx(1.1) and m.batch_latency(2) == pytest.approx(2.0)
    assert m.batch_latency(4) is None and m.batch_latency(8) is None
    assert profile.feasible_batches("sd3.5-large") == [(1, 1.1), (2, 2.0)]
    meas = profile.provenance["measurements"]["sd3.5-large"]
    assert meas[2]["p90_s"] == 2.4 and meas[4] == {"oom": True}


def test_profile_latency_cli_writes_a_profile_the_planner_reads(tmp_path):
    from hadis.core.profile import load_profile

    out = tmp_path / "p.yaml"
    run = subprocess.run(
        [sys.executable, "-m", "hadis.cli", "profile", "latency", "--model", "tiny-light", "--batch-sizes", "1,2",
         "--repeats", "2", "--warmup", "1", "--out", str(out), "--weights-cache", str(tmp_path / "cache")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "batch   2: p50" in run.stderr  # progress
    profile = load_profile(out)
    assert profile.names == ("tiny-light",)
    from hadis.core.planner import swap_seconds

    load_s = profile.model("tiny-light").load_seconds
    assert load_s is not None and load_s > 0 and "loaded from the cache in" in run.stderr
    assert swap_seconds(profile)["tiny-light"] == load_s  # the planner's swap time is the measured load
    assert [b for b, _s in profile.feasible_batches("tiny-light")] == [1, 2]


def test_a_stopped_worker_answers_what_it_holds_then_exits_with_triton_not_after_pytritons_teardown(tmp_path):
    """SIGTERM with six images held by a worker of 1 s batches of four: all six are answered,
    the worker exits as soon as its Triton server has (the GPU a re-plan's new pod waits for is
    free sooner) and leaves no Triton process behind."""
    import time

    from hadis.local import free_port

    http, grpc, metrics = free_port(), free_port(), free_port()
    err = (tmp_path / "worker.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hadis.cli", "worker", "serve", "--model", "tiny-heavy", "--http-port", str(http),
         "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--min-batch-seconds", "1", "--drain-seconds", "20"],
        stdout=err, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    url = f"http://127.0.0.1:{http}/v2/models/tiny-heavy"
    body = {"inputs": [{"name": "PROMPT", "shape": [1, 1], "datatype": "BYTES", "data": ["a cat"]},
                       {"name": "SEED", "shape": [1, 1], "datatype": "INT64", "data": [1]}]}  # fmt: skip

    def infer(_k: int) -> int:
        req = urllib.request.Request(f"{url}/infer", data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status

    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = [pool.submit(infer, k) for k in range(6)]
            # every image reached Triton before the stop: a batch runs and the rest wait for it
            stats = f"http://127.0.0.1:{metrics}/metrics"
            while time.monotonic() < deadline:
                text = urllib.request.urlopen(stats, timeout=2).read().decode()
                pending = sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                              if ln.startswith("nv_inference_pending_request_count"))  # fmt: skip
                if pending >= 2:  # four in the running batch, two queued behind it
                    break
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert [a.result() for a in answers] == [200] * 6
        assert proc.wait(60) == 0
        log = (tmp_path / "worker.log").read_text()
        assert "Triton done" in log and "after the stop; exiting" in log, log[-2000:]
        assert "waiting for Triton (pid none found)" not in log, log[-2000:]  # its process, not a port, watched
        left = subprocess.run(["pgrep", "-f", f"tritonserver.*--http-port {http}"], capture_output=True, text=True)
        assert left.stdout.strip() == "", left.stdout
    finally:
        if proc.poll() is None:
            proc.kill()
