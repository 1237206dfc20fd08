"""Worker model specs (``hadis.worker-model/v1``): one YAML file per model variant, shipped as
package data in ``hadis/workers/specs/`` (so the worker image and any pip install have them).

Pure parsing, no torch. A spec names where the weights come from (a Hugging Face id or a
local path, e.g. a PVC mount), the diffusers pipeline class and how to run it. ``tiny: true``
builds the same pipeline class from small configs with random weights in-process (no
download), for tests and the CPU demo.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from hadis.core.errors import DataError

API_VERSION = "hadis.worker-model/v1"
PIPELINES = (
    "StableDiffusionPipeline",
    "StableDiffusionXLPipeline",
    "StableDiffusion3Pipeline",
)
DTYPES = ("float32", "float16", "bfloat16")
DEVICES = ("cuda", "cpu")
SPECS_DIR = Path(__file__).with_name("specs")
_RES_RE = re.compile(r"^(\d{2,5})x(\d{2,5})$")


@dataclass(frozen=True)
class UnetOverride:
    """A UNet checkpoint that replaces the pipeline's (SDXL-Lightning ships only its UNet)."""

    source: str
    file: str


@dataclass(frozen=True)
class Discriminator:
    enabled: bool = False
    architecture: str = "clip-vit-b-32"  # or "tiny"
    weights: str | None = None  # safetensors file; random weights when absent


@dataclass(frozen=True)
class ModelSpec:
    name: str
    pipeline: str
    source: str
    steps: int
    guidance: float
    width: int
    height: int
    dtype: str = "float16"
    max_batch: int = 4
    max_queue_delay_us: int = 2000
    tiny: bool = False
    unet: UnetOverride | None = None
    scheduler: str | None = None  # e.g. EulerDiscreteScheduler, with trailing timesteps
    discriminator: Discriminator = Discriminator()
    device: str = "cuda"  # where the worker runs it unless told otherwise; the tiny variants say cpu
    revision: str | None = None  # the hub commit (or tag) to fetch; pin it for repeatable weights

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


_KEYS = {
    "apiVersion",
    "name",
    "pipeline",
    "source",
    "steps",
    "guidance",
    "resolution",
    "dtype",
    "maxBatch",
    "maxQueueDelayMicroseconds",
    "tiny",
    "unet",
    "scheduler",
    "discriminator",
    "device",
    "revision",
}


def parse_spec(text: str, source: str) -> ModelSpec:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise DataError(source, f"invalid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise DataError(source, "must be a YAML mapping")
    extra = sorted(set(doc) - _KEYS)
    if extra:
        raise DataError(source, f"unknown key(s): {', '.join(extra)}")
    if doc.get("apiVersion") != API_VERSION:
        raise DataError(source, f"must be {API_VERSION}", field="apiVersion")

    def text_field(key: str) -> str:
        v = doc.get(key)
        if not isinstance(v, str) or not v:
            raise DataError(source, "must be a non-empty string", field=key)
        return v

    name = text_field("name")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$", name):
        raise DataError(source, "must be a Triton model name (letters, digits, '.', '_', '-')", field="name")
    pipeline = text_field("pipeline")
    if pipeline not in PIPELINES:
        raise DataError(source, f"must be one of {', '.join(PIPELINES)}", field="pipeline")
    steps = doc.get("steps")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1000:
        raise DataError(source, "must be an integer in [1, 1000]", field="steps")
    guidance = doc.get("guidance", 0.0)
    if isinstance(guidance, bool) or not isinstance(guidance, int | float) or not math.isfinite(guidance):
        raise DataError(source, "must be a number", field="guidance")
    res = doc.get("resolution")
    m = _RES_RE.match(str(res)) if res is not None else None
    if not m or int(m.group(1)) % 8 or int(m.group(2)) % 8:
        raise DataError(source, "must be WIDTHxHEIGHT, multiples of 8", field="resolution")
    dtype = doc.get("dtype", "float16")
    if dtype not in DTYPES:
        raise DataError(source, f"must be one of {', '.join(DTYPES)}", field="dtype")
    max_batch = doc.get("maxBatch", 4)
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or not 1 <= max_batch <= 256:
        raise DataError(source, "must be an integer in [1, 256]", field="maxBatch")
    delay = doc.get("maxQueueDelayMicroseconds", 2000)
    if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= 10_000_000:
        raise DataError(source, "must be an integer in [0, 10000000]", field="maxQueueDelayMicroseconds")
    tiny = doc.get("tiny", False)
    if not isinstance(tiny, bool):
        raise DataError(source, "must be true or false", field="tiny")
    unet = None
    if doc.get("unet") is not None:
        u = doc["unet"]
        if not isinstance(u, dict) or not isinstance(u.get("source"), str) or not isinstance(u.get("file"), str):
            raise DataError(source, "must be a mapping with source and file", field="unet")
        unet = UnetOverride(u["source"], u["file"])
    scheduler = doc.get("scheduler")
    if scheduler is not None and not isinstance(scheduler, str):
        raise DataError(source, "must be a diffusers scheduler class name", field="scheduler")
    disc_doc = doc.get("discriminator") or {}
    if not isinstance(disc_doc, dict) or set(disc_doc) - {"enabled", "architecture", "weights"}:
        raise DataError(source, "must be a mapping of enabled, architecture, weights", field="discriminator")
    arch = disc_doc.get("architecture", "clip-vit-b-32")
    if arch not in ("clip-vit-b-32", "tiny"):
        raise DataError(source, "must be clip-vit-b-32 or tiny", field="discriminator.architecture")
    weights = disc_doc.get("weights")
    if weights is not None and (not isinstance(weights, str) or not weights.endswith(".safetensors")):
        raise DataError(source, "must be a .safetensors file (data only, never pickle)", field="discriminator.weights")
    device = doc.get("device", "cuda")
    if device not in DEVICES:
        raise DataError(source, f"must be one of {', '.join(DEVICES)}", field="device")
    revision = doc.get("revision")
    if revision is not None and (not isinstance(revision, str) or not re.match(r"^[A-Za-z0-9_.\-/]{1,200}$", revision)):
        raise DataError(source, "must be a hub revision: a commit hash, branch or tag", field="revision")
    return ModelSpec(
        name=name,
        pipeline=pipeline,
        source=text_field("source"),
        steps=steps,
        guidance=float(guidance),
        width=int(m.group(1)),
        height=int(m.group(2)),
        dtype=dtype,
        max_batch=max_batch,
        max_queue_delay_us=delay,
        tiny=tiny,
        unet=unet,
        scheduler=scheduler,
        discriminator=Discriminator(bool(disc_doc.get("enabled", False)), arch, weights),
        device=device,
        revision=revision,
    )


def load_spec(path: str | Path) -> ModelSpec:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(str(p), f"cannot read: {e.strerror}") from None
    return parse_spec(text, str(p))


def find_spec(name_or_path: str, specs_dir: Path = SPECS_DIR) -> ModelSpec:
    """A spec by file path, or by variant name from the shipped specs."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return load_spec(p)
    candidate = specs_dir / f"{name_or_path}.yaml"
    if candidate.exists():
        return load_spec(candidate)
    known = sorted(q.stem for q in specs_dir.glob("*.yaml"))
    raise DataError(name_or_path, f"no such model spec; known: {', '.join(known)}")
