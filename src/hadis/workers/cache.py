"""Model weights in a cache that outlives pods: fetched once, then loaded from disk by every
replica that starts on it (a node-local path or a shared PersistentVolumeClaim).

An entry is ``<cache>/<model>/<revision>/``: a diffusers folder (``save_pretrained`` layout)
plus a marker file written last, so a fetch cut off half-way is never taken for a complete one.
A fetch writes into a private ``.partial-*`` folder and renames it into place; when two pods
fetch the same entry at once, the first rename wins and the other discards its copy.

Hub models are fetched with ``huggingface_hub.snapshot_download`` at the spec's (or the
cascade's) pinned ``revision``. The tiny random-weight variants have no hub to come from: their
"fetch" builds the pipeline and saves it, a named stand-in for a download that exercises the same
cache, marker and load path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from hadis.workers.spec import ModelSpec

MARKER = ".hadis-complete.json"
UNET_DIR = "unet-override"


@dataclass(frozen=True)
class Fetched:
    path: Path  # the entry: a folder from_pretrained loads
    downloaded: bool  # False: it was in the cache already
    seconds: float
    bytes: int
    revision: str


class UnsafeCachePath(ValueError):
    """A model name or revision that would name a folder outside its own cache entry."""


def _safe(part: str, what: str) -> str:
    """``part`` as one folder name: other characters become ``_`` (a ``/`` too), and a part that
    would be the folder itself or its parent (``.``, ``..``, empty) is refused: with
    ``revision: ".."`` the entry was the cache root, and a cut-off copy's clean-up removed it."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", part)
    if safe in ("", ".", ".."):
        raise UnsafeCachePath(f"{what} {part!r} names no folder of its own in the weight cache")
    return safe


def revision_of(spec: ModelSpec, revision: str | None = None) -> str:
    """The revision an entry is filed under: the one asked for, else the spec's; a hub model
    without one is ``main`` (unpinned: a new upstream commit changes the weights under it)."""
    if revision:
        return revision
    if spec.revision:
        return spec.revision
    return "random-weights" if spec.tiny else "main"


def entry_dir(cache: Path, spec: ModelSpec, revision: str | None = None) -> Path:
    return cache / _safe(spec.name, "model name") / _safe(revision_of(spec, revision), "revision")


def _remove_entry(cache: Path, entry: Path, ignore_errors: bool = False) -> None:
    """Delete a folder of the cache only if it resolves two levels under its root (an entry or
    a partial copy of one): never the root, another model, or a path a link points elsewhere."""
    root, target = cache.resolve(), entry.resolve()
    if target.parent.parent != root:
        raise UnsafeCachePath(f"refusing to delete {entry}: it is not an entry of the cache {cache}")
    shutil.rmtree(target, ignore_errors=ignore_errors)


def complete(entry: Path) -> dict | None:
    """The entry's marker (source, revision, bytes, when), or None when it is not complete."""
    try:
        return json.loads((entry / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _download(spec: ModelSpec, revision: str, into: Path) -> None:
    if spec.tiny:  # no hub: build the random-weight pipeline and save it, as a download would
        from hadis.workers.pipelines import quiet_libraries, tiny_pipeline

        quiet_libraries()
        tiny_pipeline(spec).save_pretrained(str(into))
        return
    from huggingface_hub import hf_hub_download, snapshot_download

    snapshot_download(spec.source, revision=revision, local_dir=str(into))
    if spec.unet is not None:
        hf_hub_download(spec.unet.source, spec.unet.file, local_dir=str(into / UNET_DIR))


def fetch(spec: ModelSpec, cache: Path, revision: str | None = None) -> Fetched:
    """The spec's weights in ``cache``: found there, or downloaded into it now."""
    rev = revision_of(spec, revision)
    entry = entry_dir(cache, spec, revision)
    done = complete(entry)
    if done is not None:
        return Fetched(entry, False, 0.0, int(done.get("bytes", 0)), rev)
    entry.parent.mkdir(parents=True, exist_ok=True)
    partial = entry.with_name(f"{entry.name}.partial-{os.getpid()}-{time.monotonic_ns()}")
    t0 = time.perf_counter()
    try:
        _download(spec, rev, partial)
        size = _size(partial)
        marker = {"source": spec.source, "revision": rev, "bytes": size, "fetchedAt": time.time()}
        (partial / MARKER).write_text(json.dumps(marker))
        if entry.exists() and complete(entry) is None:
            _remove_entry(cache, entry)  # an older cut-off copy without its marker
        try:
            partial.rename(entry)
        except OSError:
            if complete(entry) is None:
                raise
            # another pod completed the same entry first: use it
    finally:
        if partial.exists():
            _remove_entry(cache, partial, ignore_errors=True)
    return Fetched(entry, True, time.perf_counter() - t0, size, rev)
