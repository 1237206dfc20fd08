"""A Triton server (PyTriton) around one diffusers pipeline: ``hadis worker serve``.

Protocol (KServe v2 / Triton), model name = the spec's name:

- inputs ``PROMPT`` (BYTES, UTF-8) and ``SEED`` (INT64), one each per request;
- outputs ``IMAGE`` (BYTES: a PNG) and, on models that can be escalated from,
  ``CONFIDENCE`` (FP32: the discriminator's P(real)) and ``DISCRIMINATOR`` (BYTES: ``random``
  or ``safetensors:<sha256 prefix>``, so a client knows whether the confidence means anything).

Triton batches concurrent requests up to the spec's ``maxBatch``. The server starts listening
only after the pipeline is loaded and warmed up; Triton then loads the model into its Python
backend, and only from then on does ``/v2/models/<name>/ready`` answer 200. That model-level
endpoint is what readiness means (the server-level ``/v2/health/ready`` answers earlier, while
requests still fail with "unknown model"). Triton's own metrics (``nv_inference_*``) are on
the metrics port.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hadis.contract import IN_PROMPT, IN_SEED, OUT_CONFIDENCE, OUT_DISCRIMINATOR, OUT_IMAGE
from hadis.workers.spec import ModelSpec

log = logging.getLogger("hadis.worker")


def encode_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def make_generate(
    spec: ModelSpec, pipe, discriminator=None, min_batch_s: float = 0.0
) -> Callable[[list[str], list[int]], dict[str, list]]:
    """prompts + seeds -> PNGs (and confidences): the worker's work, free of Triton types.

    ``min_batch_s`` holds each batch to at least that many seconds: a tiny CPU pipeline then
    stands in for a model of a known service time, whatever this machine's speed (tests, demos)."""
    from hadis.workers.pipelines import run_pipeline

    def generate(prompts: list[str], seeds: list[int]) -> dict[str, list]:
        started = time.monotonic()
        out = run_pipeline(pipe, spec, prompts, seeds)
        images = (np.clip(out, 0.0, 1.0) * 255).round().astype(np.uint8)
        result: dict[str, list] = {OUT_IMAGE: [encode_png(img) for img in images]}
        if discriminator is not None:
            result[OUT_CONFIDENCE] = list(discriminator.confidence(images))
            result[OUT_DISCRIMINATOR] = [discriminator.source.encode()] * len(images)
        held = min_batch_s - (time.monotonic() - started)
        if held > 0:
            time.sleep(held)
        return result

    return generate


class Batches:
    """Batches running in the inference callable now (read by the drain on SIGTERM)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0

    def __enter__(self) -> Batches:
        with self._lock:
            self.running += 1
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self.running -= 1


def triton_infer(generate: Callable[[list[str], list[int]], dict[str, list]], batches: Batches | None = None):
    """Wrap ``generate`` as a PyTriton batched inference callable."""
    from pytriton.decorators import batch

    running = batches or Batches()

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:  # the batch's tensors, by name
        prompts = [
            p[0].decode("utf-8", errors="replace") if isinstance(p[0], bytes) else str(p[0]) for p in inputs[IN_PROMPT]
        ]
        seeds = [int(s[0]) for s in inputs[IN_SEED]]
        with running:
            result = generate(prompts, seeds)
        out = {OUT_IMAGE: np.array([[png] for png in result[OUT_IMAGE]], dtype=object)}
        if OUT_CONFIDENCE in result:
            out[OUT_CONFIDENCE] = np.array([[c] for c in result[OUT_CONFIDENCE]], dtype=np.float32)
            out[OUT_DISCRIMINATOR] = np.array([[s] for s in result[OUT_DISCRIMINATOR]], dtype=object)
        return out

    return infer


def _stat(pid: int | str) -> list[str]:
    """``/proc/<pid>/stat``'s fields after the command name (state, ppid, ...); OSError if gone."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def triton_processes(parent: int) -> list[int]:
    """The ``tritonserver`` processes under ``parent`` (PyTriton starts the server as a child)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat(entry)[1])
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], list(children.get(parent, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"tritonserver" in f.read().split(b"\0", 1)[0]:
                    found.append(pid)
        except OSError:
            continue
    return found


def process_gone(pid: int) -> bool:
    """Exited (no such process, or a zombie not yet reaped)."""
    try:
        return _stat(pid)[0] == "Z"
    except OSError:
        return True


def exit_once_drained(servers: list[int], model: str, batches: Batches, poll_s: float = 0.1) -> None:
    """Exit as soon as the Triton server processes have exited, not after PyTriton's teardown
    (2-4 s more): a scaled-down pod's GPU then goes sooner to the pod that waits for it. Triton
    stops listening at once (a router sends new images to another pod), answers every connection
    it holds, unloads the model and only then exits. The process, not its ports, is watched: the
    ports close before the process has gone."""
    start = time.monotonic()
    print(f"worker {model}: stopping; waiting for Triton (pid {', '.join(map(str, servers)) or 'none found'})",
          file=sys.stderr, flush=True)  # fmt: skip
    while not (all(process_gone(pid) for pid in servers) and batches.running == 0):
        time.sleep(poll_s)
    print(f"worker {model}: Triton done {time.monotonic() - start:.1f}s after the stop; exiting", file=sys.stderr,
          flush=True)  # fmt: skip
    os._exit(0)


def _libpython_path() -> None:
    """PyTriton's Python-backend stub loads libpython from the library path: make it this
    interpreter's (a pyenv Python otherwise gets the system's older one and fails at load)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and os.path.isdir(libdir):
        current = os.environ.get("LD_LIBRARY_PATH", "")
        if libdir not in current.split(":"):
            os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{current}" if current else libdir


def serve(
    spec: ModelSpec,
    *,
    host: str = "127.0.0.1",
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    device: str = "cpu",
    min_batch_s: float = 0.0,
    drain_s: int = 30,
    weights_cache: Path | None = None,
    revision: str | None = None,
) -> None:
    """Load, warm up, then serve until SIGINT or SIGTERM, then finish the requests in flight for up
    to ``drain_s`` seconds (``min_batch_s``: see ``make_generate``)."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    from hadis.workers.cache import fetch
    from hadis.workers.pipelines import build_discriminator, load_pipeline

    start = time.perf_counter()
    weights = None
    if weights_cache is not None:  # normally the init container fetched it: then this is a lookup
        got = fetch(spec, weights_cache, revision)
        how = f"downloaded in {got.seconds:.1f}s" if got.downloaded else "no download"
        print(f"worker {spec.name}: weights at {got.path} ({got.bytes / 2**20:.1f} MiB, revision {got.revision}; "
              f"{how})", file=sys.stderr, flush=True)  # fmt: skip
        weights = got.path
    t_load = time.perf_counter()
    pipe = load_pipeline(spec, device, weights)
    print(
        f"worker {spec.name}: pipeline loaded {'from the weight cache' if weights else 'from ' + spec.source} "
        f"in {time.perf_counter() - t_load:.2f}s",
        file=sys.stderr,
        flush=True,
    )
    disc = None
    if spec.discriminator.enabled:
        disc = build_discriminator(spec.discriminator.architecture, spec.discriminator.weights, device)
    generate = make_generate(spec, pipe, disc, min_batch_s)
    generate(["warm-up"], [0])  # first call allocates and compiles; keep it out of user latency
    print(
        f"worker {spec.name}: loaded and warmed up in {time.perf_counter() - start:.1f}s "
        f"(discriminator: {disc.source if disc else 'none'}"
        + (f"; each batch held to at least {min_batch_s:g}s" if min_batch_s > 0 else "")
        + ")",
        file=sys.stderr,
        flush=True,
    )
    _libpython_path()
    outputs = [Tensor(name=OUT_IMAGE, dtype=bytes, shape=(1,))]
    if disc is not None:
        outputs += [
            Tensor(name=OUT_CONFIDENCE, dtype=np.float32, shape=(1,)),
            Tensor(name=OUT_DISCRIMINATOR, dtype=bytes, shape=(1,)),
        ]
    config = TritonConfig(
        http_address=host,
        http_port=http_port,
        grpc_address=host,
        grpc_port=grpc_port,
        metrics_address=host,
        metrics_port=metrics_port,
        allow_metrics=True,
        allow_gpu_metrics=device.startswith("cuda"),
        exit_on_error=True,
        exit_timeout_secs=drain_s,
    )
    batches = Batches()
    with Triton(config=config) as triton:
        triton.bind(
            model_name=spec.name,
            infer_func=triton_infer(generate, batches),
            inputs=[Tensor(name=IN_PROMPT, dtype=bytes, shape=(1,)), Tensor(name=IN_SEED, dtype=np.int64, shape=(1,))],
            outputs=outputs,
            config=ModelConfig(
                max_batch_size=spec.max_batch,
                batcher=DynamicBatcher(max_queue_delay_microseconds=spec.max_queue_delay_us),
            ),
            strict=True,
        )
        print(
            f"worker {spec.name}: serving on http://{host}:{http_port} (metrics :{metrics_port})",
            file=sys.stderr,
            flush=True,
        )

        # SIGTERM (a pod deleted or scaled down) stops as Ctrl-C does: PyTriton then stops Triton,
        # which finishes the requests in flight, and the GPU is free in seconds, not after the
        # kubelet's grace period. Set here: starting Triton resets the handler, and as PID 1 in a
        # container a SIGTERM without a handler is ignored.
        # Triton's own exit is watched from then on (``exit_once_drained``).
        def stop(signum, frame):
            servers = triton_processes(os.getpid())
            threading.Thread(target=exit_once_drained, args=(servers, spec.name, batches), daemon=True).start()
            signal.default_int_handler(signum, frame)

        signal.signal(signal.SIGTERM, stop)
        triton.serve()
