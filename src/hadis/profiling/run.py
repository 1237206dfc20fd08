"""``hadis profile run``: a cascade's whole profile from the user's own variants.

Phases, each resumable from the run folder (``hadis.profiling.store``):

1. latency per batch size of each variant, timing the served callable (``workers.profiler``);
2. images for every prompt and seed from every variant, in fixed batches (a batch is the same
   whether or not the run was interrupted, so a resumed run gives the same images);
3. the discriminator's confidence for every light image, on the run's device;
4. features of every image and of the reference set, once each, cached;
5. the grid's FID (``hadis.profiling.grid``), the Pareto table, the learned router of each
   light variant, and the ConfigMaps the operator and the router read, with provenance.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hadis.contract import OUT_IMAGE, ROUTER_MODEL_KEY
from hadis.core.bundle import LABELS, Bundle, to_configmap
from hadis.core.errors import DataError
from hadis.core.pareto import ParetoTable, QualityGrid, format_table, heavy_share, pareto_filter
from hadis.core.profile import Profile, dump_profile, parse_profile
from hadis.core.routing import percentiles
from hadis.profiling import store
from hadis.profiling.fid import Moments, Reference, frechet_distance
from hadis.profiling.grid import PairInputs, assemble
from hadis.scoring.evaluate import hardness_target
from hadis.scoring.model import dump_model, train_learned
from hadis.workers.spec import ModelSpec

Say = Callable[[str], None]


@dataclass(frozen=True)
class RunSettings:
    models: tuple[str, ...]  # spec names or files, light to heavy
    prompts: Path
    reference_images: Path
    out: Path
    images_per_prompt: int = 4
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    device: str = "cpu"
    feature_net: str = "inception"
    inception_weights: str | None = None
    warmup: int = 1
    repeats: int = 5
    name: str = "hadis-profile"
    namespace: str | None = None
    shares: tuple[float, ...] = field(default=tuple(round(i / 10, 1) for i in range(11)))


@dataclass(frozen=True)
class RunResult:
    configmap: Path
    router_configmaps: tuple[Path, ...]
    grid_rows: int
    pareto_rows: int


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sha256_files(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def read_prompts(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise DataError(str(path), f"cannot read: {e.strerror}") from None
    prompts = [line.strip() for line in lines if line.strip()]
    if len(prompts) < 10:
        raise DataError(str(path), f"needs at least 10 prompts (one per line) to train the router, got {len(prompts)}")
    return prompts


def _spec_doc(spec: ModelSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "pipeline": spec.pipeline,
        "source": spec.source,
        "revision": spec.revision,
        "steps": spec.steps,
        "guidance": spec.guidance,
        "resolution": spec.size,
        "dtype": spec.dtype,
        "tiny": spec.tiny,
        "discriminator": [spec.discriminator.architecture, spec.discriminator.weights],
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("hadis", "torch", "diffusers", "transformers", "torch-fidelity", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def run(settings: RunSettings, say: Say = print) -> RunResult:
    from hadis.profiling.features import image_files
    from hadis.workers.spec import find_spec

    if len(settings.models) < 2:
        raise DataError("--model", "give at least two variants, light to heavy")
    specs = [find_spec(m) for m in settings.models]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise DataError("--model", f"variants named twice: {', '.join(names)}")
    prompts = read_prompts(settings.prompts)
    refs = image_files(settings.reference_images)
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": "hadis.profile-run/v1",
        "models": [_spec_doc(s) for s in specs],
        "prompts_sha256": sha256_file(settings.prompts),
        "prompts": len(prompts),
        "images_per_prompt": settings.images_per_prompt,
        "reference_sha256": sha256_files(refs),
        "reference_images": len(refs),
        "feature_net": settings.feature_net,
        "batch_sizes": list(settings.batch_sizes),
        "device": settings.device,
        "started": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
    }
    manifest = store.check_manifest(out, manifest)
    say(
        f"profiling {', '.join(names)} on {settings.device}: {len(prompts)} prompts x {settings.images_per_prompt} "
        f"images, {len(refs)} reference images, into {out}"
    )
    lights = specs[:-1]  # every variant but the heaviest can be a pair's light model
    profiles = {spec.name: _model_phases(spec, spec in lights, prompts, settings, say) for spec in specs}
    feature_info = _feature_phase(specs, refs, len(prompts), settings, say)
    return _assemble(specs, prompts, profiles, feature_info, manifest, settings, say)


# ------------------------------------------------------------------------------ phases 1 to 3


def _model_phases(spec: ModelSpec, light: bool, prompts: list[str], s: RunSettings, say: Say) -> Profile:
    """Latency, images and (for a light variant) confidences of one variant; its latency profile."""
    lat_path = s.out / "latency" / f"{spec.name}.yaml"
    k = s.images_per_prompt
    total = len(prompts) * k
    batch = max(1, spec.max_batch)
    missing_batches = [
        g
        for g in range(math.ceil(total / batch))
        if not all(store.image_path(s.out, spec.name, q // k, q % k).exists() for q in _batch(g, batch, total))
    ]
    conf_chunks = range(math.ceil(total / store.CHUNK)) if light else range(0)
    missing_conf = [c for c in conf_chunks if not store.chunk_path(s.out, "confidence", spec.name, c).exists()]
    if lat_path.exists() and not missing_batches and not missing_conf:
        say(f"{spec.name}: latency, {total} images{' and confidences' if light else ''} done in an earlier run")
        return parse_profile(lat_path.read_text(), str(lat_path))
    from hadis.workers.profiler import load_served, time_served

    served = load_served(spec, s.device, progress=say)
    if lat_path.exists():
        say(f"latency of {spec.name}: measured in an earlier run")
    else:
        say(f"latency of {spec.name}: the served callable at batch sizes {', '.join(map(str, s.batch_sizes))}")
        profile = time_served(served, s.batch_sizes, s.warmup, s.repeats, say)
        store.write_atomic(lat_path, dump_profile(profile))
    _images(served, prompts, missing_batches, batch, total, s, say)
    if light:
        _confidences(served, spec, missing_conf, total, s, say)
    del served
    gc.collect()
    _free_device(s.device)
    return parse_profile(lat_path.read_text(), str(lat_path))  # a broken file stops here, by name


def _batch(g: int, size: int, total: int) -> range:
    return range(g * size, min((g + 1) * size, total))


def _images(served, prompts: list[str], missing: list[int], batch: int, total: int, s: RunSettings, say: Say) -> None:
    name, k = served.spec.name, s.images_per_prompt
    todo = set(missing)
    done = sum(len(_batch(g, batch, total)) for g in range(math.ceil(total / batch)) if g not in todo)
    bar = store.Progress(f"images {name}", total, done, say)
    for g in missing:
        queries = _batch(g, batch, total)
        result = served.generate([prompts[q // k] for q in queries], list(queries))  # seed = query index
        for q, png in zip(queries, result[OUT_IMAGE], strict=True):
            store.write_atomic(store.image_path(s.out, name, q // k, q % k), png)
        bar.update(len(queries))


def _confidences(served, spec: ModelSpec, missing: list[int], total: int, s: RunSettings, say: Say) -> None:
    from hadis.profiling.features import read_image
    from hadis.workers.pipelines import build_discriminator

    disc = served.discriminator or build_discriminator(
        spec.discriminator.architecture, spec.discriminator.weights, s.device
    )
    k = s.images_per_prompt
    bar = store.Progress(f"confidences {spec.name}", total, total - sum(len(_chunk(c, total)) for c in missing), say)
    for c in missing:
        queries = _chunk(c, total)
        images = np.stack([read_image(store.image_path(s.out, spec.name, q // k, q % k)) for q in queries])
        conf = np.concatenate([disc.confidence(images[i : i + 16]) for i in range(0, len(images), 16)])
        store.save_array(store.chunk_path(s.out, "confidence", spec.name, c), conf.astype(np.float32))
        bar.update(len(queries))


def _chunk(c: int, total: int) -> range:
    return range(c * store.CHUNK, min((c + 1) * store.CHUNK, total))


def _free_device(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------ phase 4


def _feature_phase(specs: list[ModelSpec], refs: list[Path], n_prompts: int, s: RunSettings, say: Say) -> dict:
    """Features of every image and reference image, cached per chunk; the network is loaded only
    when a chunk is missing."""
    from hadis.profiling import features

    k = s.images_per_prompt
    total = n_prompts * k
    jobs: list[tuple[str, int, list[Path]]] = []
    for spec in specs:
        for c in range(math.ceil(total / store.CHUNK)):
            files = [store.image_path(s.out, spec.name, q // k, q % k) for q in _chunk(c, total)]
            jobs.append((spec.name, c, files))
    for c in range(math.ceil(len(refs) / store.CHUNK)):
        jobs.append(("reference", c, refs[c * store.CHUNK : (c + 1) * store.CHUNK]))
    missing = [j for j in jobs if not store.chunk_path(s.out, "features", j[0], j[1]).exists()]
    info = {"network": None, "meaningful": None}
    info_path = s.out / "features" / "network.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
    if missing:
        net = features.build(s.feature_net, s.device, s.inception_weights)
        info = {"network": net.name, "meaningful": net.meaningful, "dim": net.dim}
        store.write_atomic(info_path, json.dumps(info) + "\n")
        n_all = sum(len(j[2]) for j in jobs)
        bar = store.Progress(f"features ({net.name})", n_all, n_all - sum(len(j[2]) for j in missing), say)
        for model, c, files in missing:
            feats = _extract(net, [features.read_image(f) for f in files])
            store.save_array(store.chunk_path(s.out, "features", model, c), feats)
            bar.update(len(files))
        del net
        _free_device(s.device)
    else:
        say(f"features: all {len(jobs)} chunks cached ({info['network']})")
    return info


def _extract(net, images: list[np.ndarray], batch: int = 32) -> np.ndarray:
    """Features in batches of same-size images (reference images may differ in size)."""
    out: list[np.ndarray] = []
    i = 0
    while i < len(images):
        j = i + 1
        while j < len(images) and j - i < batch and images[j].shape == images[i].shape:
            j += 1
        out.append(net.extract(np.stack(images[i:j])).astype(np.float32))
        i = j
    return np.concatenate(out)


def _load_chunks(out: Path, kind: str, model: str, total: int) -> np.ndarray:
    parts = [store.load_array(store.chunk_path(out, kind, model, c)) for c in range(math.ceil(total / store.CHUNK))]
    return np.concatenate(parts)


# ------------------------------------------------------------------------------------ phase 5


def _assemble(
    specs: list[ModelSpec],
    prompts: list[str],
    profiles: dict[str, Profile],
    info: dict,
    manifest: dict,
    s: RunSettings,
    say: Say,
) -> RunResult:
    k = s.images_per_prompt
    p = len(prompts)
    total = p * k
    n_ref = manifest["reference_images"]
    ref = Reference.of(_load_chunks(s.out, "features", "reference", n_ref))
    feats = {spec.name: _load_chunks(s.out, "features", spec.name, total).reshape(p, k, -1) for spec in specs}
    lat1 = {}
    for n, prof in profiles.items():
        one = prof.models[0].latency.latency(1)
        if one is None:
            raise DataError(f"latency/{n}.yaml", "batch 1 did not run (out of memory): the grid needs it")
        lat1[n] = one

    routers, score_pct, conf_pct = {}, {}, {}
    for light in specs[:-1]:
        conf = _load_chunks(s.out, "confidence", light.name, total).reshape(p, k)
        conf_pct[light.name] = percentiles(conf.reshape(-1)).reshape(p, k)
        say(f"router for {light.name}: learned score trained on {p} prompts and their images' confidences")
        model = train_learned(
            prompts,
            hardness_target(conf.mean(axis=1)),
            provenance={
                "light_model": light.name,
                "target": "1 - percentile of the light model's mean P(real) over its images (higher = harder)",
                "trained_on": f"{p} prompts of {s.prompts.name} (sha256 {manifest['prompts_sha256'][:16]})",
                "source": "hadis profile run",
            },
            progress=say,
        )
        routers[light.name] = model
        score_pct[light.name] = percentiles(np.array([model.score(q) for q in prompts]))
        store.write_atomic(s.out / "router" / f"{light.name}.json", dump_model(model))

    t0 = time.perf_counter()
    grid, memo = [], {}
    for i, light in enumerate(specs[:-1]):
        for heavy in specs[i + 1 :]:
            ll, lh = lat1[light.name], lat1[heavy.name]
            inputs = PairInputs(
                light.name, heavy.name, feats[light.name], feats[heavy.name], score_pct[light.name],
                conf_pct[light.name],
            )  # fmt: skip
            grid += assemble(
                inputs, ref, lambda r, d, ll=ll, lh=lh: round((1 - r) * ll + heavy_share(r, d) * lh, 6),
                s.shares, s.shares, memo,
            )  # fmt: skip
    mixes = sum(key[0] != "projected" for key in memo)
    say(f"grid: {len(grid)} configurations' FID in {time.perf_counter() - t0:.2f}s ({mixes} distinct mixes)")
    rows = pareto_filter(grid)

    device = next(iter(profiles.values())).device
    models = tuple(
        replace(
            profiles[spec.name].models[0],
            fid=round(frechet_distance(Moments.of(feats[spec.name].reshape(total, -1), ref), ref), 6),
        )
        for spec in specs
    )
    measurements = {}
    for prof in profiles.values():
        measurements.update(prof.provenance.get("measurements", {}))
    provenance = {
        "source": "hadis profile run",
        "date": manifest["started"],
        "device": device,
        "versions": versions(),
        "latency": "the served callable (pipeline, PNG encoding, discriminator), p50 per batch",
        "prompts": {"file": s.prompts.name, "count": p, "sha256": manifest["prompts_sha256"]},
        "images_per_prompt": k,
        "reference_images": {"folder": s.reference_images.name, "count": n_ref, "sha256": manifest["reference_sha256"]},
        "feature_network": info.get("network"),
        "fid_meaningful": bool(info.get("meaningful")),
        "quality": "FID of each (light, heavy, router share, discriminator share), mixed per query as the router "
        "does, from cached features (hadis.profiling.grid)",
        "measurements": measurements,
    }
    profile = Profile(device=device, models=models, batch_sizes=tuple(s.batch_sizes), provenance=provenance)
    store.write_atomic(s.out / "profile.yaml", dump_profile(profile))
    store.write_atomic(s.out / "grid.csv", format_table(grid))
    store.write_atomic(s.out / "pareto.csv", format_table(rows))
    cm = to_configmap(Bundle(profile, ParetoTable(rows, QualityGrid(grid))), s.name, s.namespace)
    cm["metadata"]["annotations"] = provenance_annotations(provenance)
    cm_path = s.out / f"{s.name}-configmap.yaml"
    store.write_atomic(cm_path, yaml.safe_dump(cm, sort_keys=False, width=1000))
    router_paths = []
    for light, model in routers.items():
        rcm = router_configmap(f"{s.name}-router-{light}", s.namespace, dump_model(model), provenance)
        path = s.out / f"{s.name}-router-{light}-configmap.yaml"
        store.write_atomic(path, yaml.safe_dump(rcm, sort_keys=False, width=1000))
        router_paths.append(path)
    if not info.get("meaningful"):
        say(f"note: the features are a {info.get('network')}; the grid's machinery is real, its numbers are not")
    say(f"wrote {cm_path} ({len(grid)} grid rows, {len(rows)} on the Pareto front) and {len(router_paths)} router "
        f"model ConfigMap(s)")  # fmt: skip
    return RunResult(cm_path, tuple(router_paths), len(grid), len(rows))


def provenance_annotations(prov: dict) -> dict[str, str]:
    """The provenance a ``kubectl describe`` shows (the full record is in profile.yaml)."""
    return {
        "serving.hadis.dev/profiled-on": str(prov["device"]),
        "serving.hadis.dev/profiled-at": str(prov["date"]),
        "serving.hadis.dev/prompts-sha256": prov["prompts"]["sha256"],
        "serving.hadis.dev/reference-sha256": prov["reference_images"]["sha256"],
        "serving.hadis.dev/feature-network": str(prov["feature_network"]),
        "serving.hadis.dev/versions": json.dumps(prov["versions"], sort_keys=True),
    }


def router_configmap(name: str, namespace: str | None, model_json: str, prov: dict) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {**LABELS, "app.kubernetes.io/component": "router-model"},
        "annotations": provenance_annotations(prov),
    }
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {ROUTER_MODEL_KEY: model_json}}
