"""Load-aware dispatch against the ClusterIP, on real pods of the local cluster's real node.

Three tiny-light worker pods (each batch of up to 4 held to 1 s: 4 images/s a pod, 12 for the
tier) behind one Service, and two router pods in front of them, built by the operator's own
builders: one whose config names only the Service (kube-proxy picks a pod at random per
connection), one that also watches the Service's EndpointSlices and sends each image to the pod
with the least in flight. Open-loop Poisson arrivals (seeded) at 50% and 80% of the tier's
capacity go to each router in turn; the script prints p50/p99 latency per case and the ratio.

Needs the local cluster with its real node and the images (``make cluster-up images``); the
namespace it makes is deleted at the end. Run: ``python benchmarks/bench_dispatch.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))
import demo  # noqa: E402  (the local cluster's helpers: kubectl, images, waits)

from hadis import contract  # noqa: E402
from hadis.operator import builders  # noqa: E402
from hadis.router.config import Capacity, Discovery, Limits, RouterConfig, Tier  # noqa: E402

NS = "bench-dispatch"
PODS, PER_POD = 3, 4.0  # images per second one pod completes (a batch of 4 held to 1 s)
PROMPTS = ["a cat", "a red apple", "a dog", "a cup of tea", "a blue car", "a green tree"]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))] if s else float("nan")


def objects(watch: bool) -> list[dict]:
    name = "eps" if watch else "svc"
    svc = builders.worker_name("bench", "tiny-light")
    tier = Tier(
        "tiny-light",
        (f"{svc}.{NS}.svc:{contract.WORKER_HTTP}",),
        discovery=Discovery(NS, svc) if watch else None,
        capacity=Capacity(1.0, PER_POD, PODS),
    )
    cfg = RouterConfig(cascade=name, slo_s=30.0, size="64x64", light=tier, heavy=tier, limits=Limits(max_in_flight=500))
    placement = {"nodeSelector": demo.LOCAL_SELECTOR, "tolerations": demo.LOCAL_TOLERATIONS}
    return [
        builders.router_configmap(name, NS, cfg),
        *builders.router_rbac(name, NS),
        builders.router_deployment(name, NS, 1, demo.CONTROL_IMAGE, placement),
    ]


def workers() -> list[dict]:
    model = builders.ModelEntry(
        "tiny-light",
        "tiny-light",
        resources={"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
        args=("--min-batch-seconds", "1.0"),
    )
    placement = {"nodeSelector": demo.LOCAL_SELECTOR, "tolerations": demo.LOCAL_TOLERATIONS}
    return [
        builders.worker_deployment("bench", NS, model, PODS, demo.WORKER_IMAGE, placement),
        builders.worker_service("bench", NS, model),
    ]


async def run_load(url: str, rate: float, seconds: float, seed: int) -> tuple[list[float], int]:
    rng = random.Random(seed)
    latencies: list[float] = []
    failed = 0
    conn = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one(k: int) -> None:
            nonlocal failed
            t = time.monotonic()
            async with session.post(f"{url}/v1/images/generations", json={"prompt": PROMPTS[k % len(PROMPTS)]}) as r:
                await r.read()
                if r.status == 200:
                    latencies.append(time.monotonic() - t)
                else:
                    failed += 1

        tasks, t0, at, k = [], time.monotonic(), 0.0, 0
        while at < seconds:
            await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
            tasks.append(asyncio.create_task(one(k)))
            k += 1
            at += rng.expovariate(rate)
        await asyncio.gather(*tasks)
    return latencies, failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=40.0, help="per case (default: %(default)s)")
    ap.add_argument("--loads", default="0.5,0.8", help="shares of the tier's capacity (default: %(default)s)")
    ap.add_argument("--keep", action="store_true", help="leave the namespace for a look")
    args = ap.parse_args()
    c = demo.cluster_up()
    demo.load_images(demo.CONTROL_IMAGE, demo.WORKER_IMAGE)
    c.kubectl("create", "namespace", NS, check=False)
    try:
        docs = workers() + objects(watch=False) + objects(watch=True)
        c.kubectl("apply", "-n", NS, "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
        sel = "app.kubernetes.io/component=worker"
        demo.wait_until(
            lambda: sum(demo.condition(p, "Ready").get("status") == "True"
                        for p in c.json("get", "pods", "-n", NS, "-l", sel)["items"]) == PODS,
            f"{PODS} worker pods Ready", 300,
        )  # fmt: skip
        urls = {}
        for name in ("svc", "eps"):
            pods = c.json("get", "pods", "-n", NS, "-l", f"{contract.CASCADE_LABEL}={name}")["items"]
            pod = demo.wait_until(
                lambda pods=pods, name=name: next(
                    (p for p in c.json("get", "pods", "-n", NS, "-l", f"{contract.CASCADE_LABEL}={name}")["items"]
                     if demo.condition(p, "Ready").get("status") == "True"), None),
                f"router {name} Ready", 180,
            )  # fmt: skip
            urls[name] = f"http://{pod['status']['podIP']}:{contract.ROUTER_PORT}"
        capacity = PODS * PER_POD
        print(f"{PODS} tiny-light pods, {capacity:g} images/s in all; {args.seconds:g}s of Poisson arrivals per case")
        print(f"{'load':>5} {'rate/s':>7} {'dispatch':<16} {'n':>5} {'p50 s':>7} {'p99 s':>7} {'failed':>6}")
        rows = {}
        for share in (float(x) for x in args.loads.split(",")):
            rate = share * capacity
            for name, label in (("svc", "ClusterIP"), ("eps", "least in flight")):
                asyncio.run(run_load(urls[name], rate, 5.0, seed=1))  # warm-up, not counted
                lat, failed = asyncio.run(run_load(urls[name], rate, args.seconds, seed=7))
                rows[(share, name)] = (pct(lat, 0.5), pct(lat, 0.99))
                print(f"{share:>5.0%} {rate:>7.1f} {label:<16} {len(lat):>5} {pct(lat, 0.5):>7.2f} "
                      f"{pct(lat, 0.99):>7.2f} {failed:>6}")  # fmt: skip
        for share in sorted({s for s, _ in rows}):
            svc, eps = rows[(share, "svc")], rows[(share, "eps")]
            print(f"at {share:.0%}: ClusterIP / least-in-flight p50 {svc[0] / eps[0]:.2f}x, p99 {svc[1] / eps[1]:.2f}x")
    finally:
        if not args.keep:
            c.kubectl("delete", "namespace", NS, "--wait=false", check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
