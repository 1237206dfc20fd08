"""The run folder of ``hadis profile run``: what each phase leaves, so a rerun resumes.

Everything is data: PNG images, ``.npy`` arrays (read with ``allow_pickle=False``), YAML, CSV,
JSON. A file is written to a temporary name and renamed, so a run killed mid-write leaves no
half file, and a file that exists is complete.

    run.json                         the settings the cached results depend on (checked on rerun)
    latency/<model>.yaml             hadis.profile/v1 of one model, timed as served
    images/<model>/<prompt>-<k>.png  one image per prompt and seed
    confidence/<model>/<chunk>.npy   the discriminator's P(real) per light image
    features/<model>/<chunk>.npy     feature vectors per image (and features/reference/)
    router/<light>.json              the learned router model
    grid.csv, pareto.csv, profile.yaml, <name>-configmap.yaml, <name>-router-<light>-configmap.yaml
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hadis.core.errors import DataError

CHUNK = 256  # images per cached chunk of confidences or features


def write_atomic(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def save_array(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, np.ascontiguousarray(array), allow_pickle=False)
    os.replace(tmp, path)


def load_array(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def image_path(out: Path, model: str, prompt: int, k: int) -> Path:
    return out / "images" / model / f"{prompt:06d}-{k}.png"


def chunk_path(out: Path, kind: str, model: str, chunk: int) -> Path:
    return out / kind / model / f"{chunk:05d}.npy"


def check_manifest(out: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``run.json`` on a first run; on a rerun, refuse other settings (the cache would mix
    results of two runs). Returns the stored manifest (its ``started`` is the first run's)."""
    path = out / "run.json"
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except ValueError as e:
            raise DataError(str(path), f"not JSON ({e}); delete the folder to start over") from None
        for key, value in manifest.items():
            if key != "started" and stored.get(key) != value:
                raise DataError(
                    str(path),
                    f"this folder holds a run with other settings: {key} was {stored.get(key)!r}, now {value!r}; "
                    "use another --out, or delete the folder to start over",
                )
        return stored
    write_atomic(path, json.dumps(manifest, indent=2) + "\n")
    return manifest


class Progress:
    """One line per update at most every ``every_s`` seconds (and at the end): done, rate, ETA."""

    def __init__(self, label: str, total: int, done: int = 0, say: Callable[[str], None] = print, every_s: float = 2.0):
        self.label, self.total, self.say, self.every_s = label, total, say, every_s
        self.start_done = done
        self.done = done
        self.t0 = time.monotonic()
        self.last = -1e9
        if done:
            say(f"{label}: {done}/{total} cached from an earlier run")

    def line(self) -> str:
        elapsed = time.monotonic() - self.t0
        fresh = self.done - self.start_done
        rate = fresh / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = f"ETA {_clock((self.total - self.done) / rate)}" if rate > 0 and self.done < self.total else "done"
        width = 24
        filled = round(width * self.done / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        return f"{self.label}: [{bar}] {self.done}/{self.total} ({pct:.0f}%) {rate:.2f}/s {eta}"

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            self.say(self.line())


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
