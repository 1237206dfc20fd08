"""Router overhead and overload behaviour on the tiny local data plane (real processes).

1. Overhead: the same closed-loop load (C concurrent clients, one image per request, light
   tier only) sent through the router and straight to the light worker over Triton's HTTP
   protocol. Prints p50/p99 latency and requests/s of both, the router's added latency and the
   throughput ratio.
2. Overload: an open-loop Poisson load at 10x the capacity measured in step 1, for a fixed
   time, with a 2 s SLO. Prints the share admitted and shed (503 + Retry-After), the p50/p99
   latency of admitted requests against the SLO, and the router's resident memory before,
   during and after.

Everything runs on loopback; the load is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

from hadis.local import tiny_config, up_tiny
from hadis.router.config import dump_config


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))] if s else float("nan")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def closed_loop_router(url: str, clients: int, total: int) -> tuple[list[float], float]:
    lat: list[float] = []
    counter = iter(range(total))

    async def client(session: aiohttp.ClientSession) -> None:
        for k in counter:
            t = time.perf_counter()
            async with session.post(url, json={"prompt": f"a red ball number {k}", "seed": k}) as r:
                await r.read()
                assert r.status == 200, r.status
            lat.append(time.perf_counter() - t)

    start = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return lat, total / (time.perf_counter() - start)


async def closed_loop_triton(endpoint: str, model: str, clients: int, total: int) -> tuple[list[float], float]:
    import tritonclient.http.aio as th

    lat: list[float] = []
    counter = iter(range(total))
    tc = th.InferenceServerClient(endpoint)

    async def client() -> None:
        for k in counter:
            p = th.InferInput("PROMPT", [1, 1], "BYTES")
            p.set_data_from_numpy(np.array([[f"a red ball number {k}".encode()]], dtype=object))
            s = th.InferInput("SEED", [1, 1], "INT64")
            s.set_data_from_numpy(np.array([[k]], dtype=np.int64))
            t = time.perf_counter()
            await tc.infer(model, [p, s])
            lat.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    rate = total / (time.perf_counter() - start)
    await tc.close()
    return lat, rate


async def open_loop(url: str, rate: float, seconds: float, timeout_s: float, router_pid: int) -> dict:
    rng = random.Random(1)
    admitted: list[float] = []
    shed: list[float] = []
    retry_after: list[int] = []
    errors = 0
    peak_rss = 0.0

    async def one(session: aiohttp.ClientSession, k: int) -> None:
        nonlocal errors
        t = time.perf_counter()
        try:
            async with session.post(url, json={"prompt": f"overload {k}", "seed": k}, timeout=timeout_s) as r:
                await r.read()
                dt = time.perf_counter() - t
                if r.status == 200:
                    admitted.append(dt)
                elif r.status in (429, 503):
                    shed.append(dt)
                    retry_after.append(int(r.headers.get("Retry-After", "0")))
                else:
                    errors += 1
        except (TimeoutError, aiohttp.ClientError):
            errors += 1

    tasks = []
    start = time.perf_counter()
    next_t = 0.0
    k = 0
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        while next_t < seconds:
            delay = start + next_t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, k)))
            k += 1
            next_t += rng.expovariate(rate)
            if k % 50 == 0:
                peak_rss = max(peak_rss, rss_mib(router_pid))
        await asyncio.gather(*tasks)
    peak_rss = max(peak_rss, rss_mib(router_pid))
    return {
        "offered": k,
        "admitted": admitted,
        "shed": shed,
        "retry_after": retry_after,
        "errors": errors,
        "peak_rss": peak_rss,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=120)
    ap.add_argument("--overload-seconds", type=float, default=15.0)
    ap.add_argument("--overload-factor", type=float, default=10.0)
    ap.add_argument("--slo", type=float, default=2.0)
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="hadis-bench-"))
    print("starting the tiny data plane (two Triton workers, the router) ...", file=sys.stderr, flush=True)
    plane = up_tiny(workdir, router_ratio=0.0, disc_ratio=0.0, slo_s=30.0, progress=lambda _l: None)
    try:
        url = f"{plane.router_url}/v1/images/generations"
        light = f"127.0.0.1:{plane.worker_ports['tiny-light']}"
        # warm both paths
        asyncio.run(closed_loop_router(url, 2, 8))
        asyncio.run(closed_loop_triton(light, "tiny-light", 2, 8))

        direct, direct_rate = asyncio.run(closed_loop_triton(light, "tiny-light", args.clients, args.requests))
        routed, routed_rate = asyncio.run(closed_loop_router(url, args.clients, args.requests))
        print(f"overhead: {args.clients} clients, {args.requests} requests of one 64x64 image, light tier only")
        print(
            f"  Triton direct: p50 {pct(direct, 0.5) * 1000:7.1f} ms  p99 {pct(direct, 0.99) * 1000:7.1f} ms  "
            f"{direct_rate:6.2f} req/s"
        )
        print(
            f"  via router:    p50 {pct(routed, 0.5) * 1000:7.1f} ms  p99 {pct(routed, 0.99) * 1000:7.1f} ms  "
            f"{routed_rate:6.2f} req/s"
        )
        print(
            f"  router adds    p50 {(pct(routed, 0.5) - pct(direct, 0.5)) * 1000:+7.1f} ms  "
            f"p99 {(pct(routed, 0.99) - pct(direct, 0.99)) * 1000:+7.1f} ms; "
            f"throughput ratio router/direct {routed_rate / direct_rate:.2f}"
        )

        cfg = tiny_config(plane.worker_ports["tiny-light"], plane.worker_ports["tiny-heavy"], 0.0, 0.0, args.slo)
        plane.config_path.write_text(dump_config(cfg))
        time.sleep(2.5)  # the router reloads its config within a second
        capacity = routed_rate
        rate = args.overload_factor * capacity
        pid = plane.procs["router"].pid
        rss_before = rss_mib(pid)
        res = asyncio.run(open_loop(url, rate, args.overload_seconds, timeout_s=4 * args.slo, router_pid=pid))
        time.sleep(1.0)
        rss_after = rss_mib(pid)
        adm, shed = res["admitted"], res["shed"]
        print(
            f"overload: Poisson arrivals at {rate:.1f} req/s ({args.overload_factor:g}x the {capacity:.2f} req/s "
            f"measured above) for {args.overload_seconds:g} s, SLO {args.slo:g} s"
        )
        print(
            f"  offered {res['offered']}, admitted {len(adm)} ({len(adm) / res['offered']:.1%}), shed {len(shed)} "
            f"({len(shed) / res['offered']:.1%}), other errors {res['errors']}"
        )
        if adm:
            p99 = pct(adm, 0.99)
            verdict = "within" if p99 <= args.slo else "OVER"
            print(
                f"  admitted latency p50 {pct(adm, 0.5):.3f} s  p99 {p99:.3f} s  max {max(adm):.3f} s "
                f"({verdict} the {args.slo:g} s SLO); served {len(adm) / args.overload_seconds:.2f} req/s"
            )
        if shed:
            print(
                f"  shed answered in p50 {pct(shed, 0.5) * 1000:.1f} ms, Retry-After median "
                f"{statistics.median(res['retry_after']):.0f} s"
            )
        print(
            f"  router resident memory: {rss_before:.1f} MiB before, {res['peak_rss']:.1f} MiB peak, "
            f"{rss_after:.1f} MiB after"
        )
        print(json.dumps({"direct_rate": direct_rate, "routed_rate": routed_rate}), file=sys.stderr)
    finally:
        plane.stop()


if __name__ == "__main__":
    main()
