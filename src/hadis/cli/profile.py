"""``hadis profile run`` and ``hadis profile job``: build a cascade's profile from your own variants,
here or as a Kubernetes Job on the GPU nodes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("batch sizes must be >= 1")
    return sizes


def cmd_profile_run(args: argparse.Namespace) -> int:
    from hadis.profiling.run import RunSettings, run

    settings = RunSettings(
        models=tuple(args.model),
        prompts=Path(args.prompts),
        reference_images=Path(args.reference_images),
        out=Path(args.out),
        images_per_prompt=args.images_per_prompt,
        batch_sizes=args.batch_sizes,
        device=args.device,
        feature_net=args.feature_net,
        inception_weights=args.inception_weights,
        warmup=args.warmup,
        repeats=args.repeats,
        name=args.name,
        namespace=args.namespace,
    )
    result = run(settings, _say)
    if args.apply:
        from hadis.profiling.job import apply_configmaps

        for name in apply_configmaps([result.configmap, *result.router_configmaps], args.namespace):
            _say(f"applied ConfigMap {name}")
    print(result.configmap)
    return 0


def cmd_profile_job(args: argparse.Namespace) -> int:
    from hadis.cli.common import write_output
    from hadis.profiling.job import JobSettings, dump_manifests, job_manifests

    settings = JobSettings(
        name=args.name,
        namespace=args.namespace,
        models=tuple(args.model),
        prompts=Path(args.prompts),
        reference_images=Path(args.reference_images) if args.reference_images else None,
        reference_claim=args.reference_claim,
        image=args.image,
        device=args.device,
        images_per_prompt=args.images_per_prompt,
        batch_sizes=args.batch_sizes,
        feature_net=args.feature_net,
        inception_weights=args.inception_weights,
        claim=args.claim,
        storage=args.storage,
        storage_class=args.storage_class,
        gpus=args.gpus,
        configmap=args.configmap,
        node_selector=dict(kv.split("=", 1) for kv in args.node_selector or []),
        tolerations=[_toleration(t) for t in args.toleration or []],
        memory=args.memory,
        repeats=args.repeats,
    )
    write_output(dump_manifests(job_manifests(settings)), args.out, "the profiling Job's manifests")
    return 0


def _toleration(text: str) -> dict[str, str]:
    """KEY[=VALUE]:EFFECT as a toleration (Exists without a value)."""
    key, sep, effect = text.rpartition(":")
    if not sep or not key:
        raise SystemExit(f"error: --toleration expects KEY[=VALUE]:EFFECT, got {text!r}")
    k, eq, v = key.partition("=")
    return {"key": k, "operator": "Equal", "value": v, "effect": effect} if eq else {
        "key": k, "operator": "Exists", "effect": effect}  # fmt: skip


def _common(p: argparse.ArgumentParser) -> None:
    from hadis.cli.common import _positive_int as _positive

    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="SPEC",
        help="a worker spec (name or file), light to heavy; repeat for each variant (at least two)",
    )
    p.add_argument("--prompts", required=True, help="prompts file, one per line (at least 10)")
    p.add_argument("--images-per-prompt", type=_positive, default=4, help="seeds per prompt (default: %(default)s)")
    p.add_argument("--batch-sizes", type=_sizes, default=(1, 2, 4, 8), help="comma-separated (default: 1,2,4,8)")
    p.add_argument(
        "--feature-net",
        choices=("inception", "random-inception", "random"),
        default="inception",
        help="inception: the FID Inception-v3 (needs --inception-weights); random-inception: its architecture "
        "with random weights; random: a small random network (tests). Random weights: FID values mean nothing "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--inception-weights",
        metavar="FILE",
        help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth (default: $HADIS_INCEPTION_WEIGHTS)",
    )
    p.add_argument("--repeats", type=_positive, default=5, help="timed runs per batch size (default: %(default)s)")


def add_parsers(psub: argparse._SubParsersAction) -> None:
    r = psub.add_parser(
        "run",
        help="profile your own variants: latency, images, confidences, FID grid, Pareto table, router, ConfigMap",
        description="Build a cascade's planning profile from your own variants. Every phase is cached in --out, "
        "so a rerun resumes where an interrupted one stopped. Example: hadis profile run --model tiny-light "
        "--model tiny-heavy --prompts prompts.txt --reference-images ref/ --device cpu --feature-net random --out run/",
    )
    _common(r)
    r.add_argument("--reference-images", required=True, metavar="DIR", help="folder of reference images (FID's set)")
    r.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: %(default)s)")
    r.add_argument("--warmup", type=int, default=1, help="untimed runs per batch size (default: %(default)s)")
    r.add_argument("--out", required=True, metavar="DIR", help="run folder (resumable)")
    r.add_argument("--name", default="hadis-profile", help="the profile ConfigMap's name (default: %(default)s)")
    r.add_argument("--namespace", help="namespace of the ConfigMaps (and of --apply)")
    r.add_argument("--apply", action="store_true", help="also write the ConfigMaps to the cluster (in a Job's pod)")
    r.set_defaults(func=cmd_profile_run)

    j = psub.add_parser(
        "job",
        help="render the Kubernetes Job that runs 'hadis profile run' on a GPU node (kubectl apply --server-side -f -)",
        description="Renders a PVC (images, features and the run folder: a rescheduled pod resumes), a ConfigMap "
        "of the prompts (and small reference sets), a ServiceAccount allowed to write ConfigMaps, and the Job. "
        "The Job writes the profile ConfigMap the cascade names in spec.profile.configMapName. Example: hadis "
        "profile job --name sdxl-pair --model sdxl-lightning-2step --model sd3.5-large --prompts prompts.txt "
        "--reference-claim coco-val:images --inception-weights /work/weights/inception.pth | kubectl apply "
        "--server-side -f - (server-side: a reference set in the inputs ConfigMap is too large for client-side "
        "apply's annotation)",
    )
    _common(j)
    j.add_argument("--name", required=True, help="name of the Job and its objects")
    j.add_argument("--namespace", required=True)
    j.add_argument("--reference-images", metavar="DIR", help="a small reference set, carried in a ConfigMap (< 1 MiB)")
    j.add_argument("--reference-claim", metavar="CLAIM:PATH", help="reference images on an existing PVC, at PATH in it")
    j.add_argument("--image", help="the worker image (default: this version's)")
    j.add_argument("--device", default="cuda", help="cuda or cpu (default: %(default)s)")
    j.add_argument("--gpus", type=int, default=None, help="nvidia.com/gpu (default: 1 with cuda, 0 with cpu)")
    j.add_argument("--claim", help="an existing PVC for the run folder (default: one is rendered)")
    j.add_argument("--storage", default="50Gi", help="size of the rendered PVC (default: %(default)s)")
    j.add_argument("--storage-class", help="storage class of the rendered PVC (default: the cluster's)")
    j.add_argument("--configmap", help="name of the profile ConfigMap the Job writes (default: NAME)")
    j.add_argument("--node-selector", action="append", metavar="KEY=VALUE", help="node selector (repeatable)")
    j.add_argument(
        "--toleration", action="append", metavar="KEY[=VALUE]:EFFECT", help="a taint to tolerate (repeatable)"
    )
    j.add_argument("--memory", help="the pod's memory request (default: 16Gi with a GPU, 2Gi on the CPU)")
    j.add_argument("--out", help="write the manifests here (default: stdout)")
    j.set_defaults(func=cmd_profile_job)
