"""End to end on real processes: tiny Triton workers, the router, Debian's Prometheus, the openai client.

Tests run in file order on one local plane; the last one kills the heavy worker.
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import os
import signal
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from hadis.local import LocalPlane, free_port, running_prometheus, scraped_value, tiny_config, up_tiny
from hadis.router.config import Auth, dump_config

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.dataplane


@pytest.fixture(scope="module")
def plane(tmp_path_factory) -> LocalPlane:
    p = up_tiny(tmp_path_factory.mktemp("plane"), router_ratio=0.0, disc_ratio=0.0, slo_s=6.0, progress=lambda _l: None)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def prometheus(plane, tmp_path_factory):
    targets = [f"127.0.0.1:{plane.admin_port}"] + [f"127.0.0.1:{p}" for p in plane.metrics_ports.values()]
    with running_prometheus(tmp_path_factory.mktemp("prometheus"), targets) as url:
        yield url


def _post(url: str, doc: dict, timeout: float = 30.0) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url, data=json.dumps(doc).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def _set_config(
    plane: LocalPlane,
    light_endpoints: tuple[str, ...] | None = None,
    light_name: str | None = None,
    heavy_name: str | None = None,
    auth: Auth | None = None,
    **changes,
) -> None:
    cfg = replace(tiny_config(plane.worker_ports["tiny-light"], plane.worker_ports["tiny-heavy"], **changes), auth=auth)
    if light_endpoints:
        cfg = replace(cfg, light=replace(cfg.light, endpoints=light_endpoints))
    if light_name:
        cfg = replace(cfg, light=replace(cfg.light, name=light_name))
    if heavy_name:
        cfg = replace(cfg, heavy=replace(cfg.heavy, name=heavy_name))
    before = _metric(plane, "hadis_router_config_reloads_total")
    tmp = plane.config_path.with_suffix(".tmp")
    tmp.write_text(dump_config(cfg))
    tmp.replace(plane.config_path)  # atomic, like a ConfigMap update
    end = time.monotonic() + 10
    while _metric(plane, "hadis_router_config_reloads_total") <= before and time.monotonic() < end:
        time.sleep(0.2)
    assert _metric(plane, "hadis_router_config_reloads_total") > before, "the router did not reload its config"


def _metric(plane: LocalPlane, name: str, **labels) -> float:
    return scraped_value(plane.admin_url, name, **labels)


def test_openai_client_generates_an_image(plane):
    from openai import OpenAI
    from PIL import Image

    client = OpenAI(base_url=f"{plane.router_url}/v1", api_key="not-needed")
    requests, images = (_metric(plane, f"hadis_router_{m}_total") for m in ("arrivals", "requested_images"))
    resp = client.images.generate(prompt="a red ball on green grass", n=2, size="64x64", response_format="b64_json")
    assert len(resp.data) == 2
    # one request, two images of demand: what the operator plans for is images
    assert _metric(plane, "hadis_router_arrivals_total") == requests + 1
    assert _metric(plane, "hadis_router_requested_images_total") == images + 2
    for item in resp.data:
        img = Image.open(io.BytesIO(base64.b64decode(item.b64_json)))
        assert img.format == "PNG" and img.size == (64, 64)
        assert item.model_extra["model"] == "tiny-light"
        assert item.model_extra["escalated"] is False
        assert item.model_extra["discriminator"] == "random"  # the response says the weights are random


def test_same_seed_same_image(plane):
    a = _post(f"{plane.router_url}/v1/images/generations", {"prompt": "a lighthouse", "seed": 42})[2]
    b = _post(f"{plane.router_url}/v1/images/generations", {"prompt": "a lighthouse", "seed": 42})[2]
    c = _post(f"{plane.router_url}/v1/images/generations", {"prompt": "a lighthouse", "seed": 43})[2]
    assert a["data"][0]["b64_json"] == b["data"][0]["b64_json"] != c["data"][0]["b64_json"]


def test_bad_requests_get_json_errors(plane):
    from openai import BadRequestError, OpenAI

    client = OpenAI(base_url=f"{plane.router_url}/v1", api_key="x", max_retries=0)
    images = _metric(plane, "hadis_router_requested_images_total")
    with pytest.raises(BadRequestError, match="'n' must be between 1 and 4"):
        client.images.generate(prompt="a cat", n=9, size="64x64", response_format="b64_json")
    assert _metric(plane, "hadis_router_requested_images_total") == images  # refused: no demand
    status, _headers, body = _post(f"{plane.router_url}/v1/images/generations", {"prompt": "a", "size": "1x1"})
    assert status == 400 and body["error"]["param"] == "size"
    req = urllib.request.Request(f"{plane.router_url}/v1/nothing-here")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 404 and "error" in json.loads(err.value.read())


def test_api_keys_and_a_quota_per_key_as_openai_clients_expect(plane, tmp_path):
    """With auth configured, the openai client gets AuthenticationError without a valid key and
    RateLimitError (Retry-After) over its key's quota; keys are revoked by removing their file."""
    from openai import AuthenticationError, OpenAI, RateLimitError

    keys = tmp_path / "keys"
    keys.mkdir()
    team_a, team_b = "sk-team-a-0123456789abcdef", "sk-team-b-0123456789abcdef"
    (keys / "team-a").write_text(team_a + "\n")
    (keys / "team-b").write_text(team_b)
    url, gen = f"{plane.router_url}/v1", {"prompt": "a red ball", "size": "64x64", "response_format": "b64_json"}
    before = {r: _metric(plane, "hadis_router_rejected_requests_total", reason=r) for r in ("unauthorized", "quota")}
    _set_config(plane, router_ratio=0.0, disc_ratio=0.0, auth=Auth(str(keys), requests_per_minute=1, burst=2))
    try:
        status, headers, body = _post(f"{url}/images/generations", {"prompt": "a cat"})
        assert status == 401 and body["error"]["code"] == "invalid_api_key" and "Bearer" in headers["WWW-Authenticate"]
        with pytest.raises(AuthenticationError, match="the API key is not valid"):
            OpenAI(base_url=url, api_key="sk-wrong-0123456789abcdef", max_retries=0).images.generate(**gen)
        a = OpenAI(base_url=url, api_key=team_a, max_retries=0)
        assert [len(a.images.generate(**gen).data) for _ in range(2)] == [1, 1]  # its burst
        with pytest.raises(RateLimitError, match="over its quota of 1 requests per minute") as err:
            a.images.generate(**gen)  # a minute per request after the burst: no machine is that slow
        assert 1 <= int(err.value.response.headers["retry-after"]) <= 60
        b = OpenAI(base_url=url, api_key=team_b, max_retries=0)
        assert len(b.images.generate(**gen).data) == 1  # its own quota
        (keys / "team-b").unlink()  # revoked: refused once the router has re-read the folder

        def refused() -> bool:
            try:
                b.images.generate(**gen)
            except AuthenticationError:
                return True
            except RateLimitError:  # still a known key (over its quota)
                pass
            return False

        end = time.monotonic() + 30
        while not refused():
            assert time.monotonic() < end, "team-b's key still accepted 30 s after its file was removed"
            time.sleep(0.5)
        assert _metric(plane, "hadis_router_api_key_requests_total", key="team-a") == 2
        assert _metric(plane, "hadis_router_rejected_requests_total", reason="quota") >= before["quota"] + 1
        assert (
            _metric(plane, "hadis_router_rejected_requests_total", reason="unauthorized") >= before["unauthorized"] + 3
        )
        with urllib.request.urlopen(f"{plane.admin_url}/openapi.json", timeout=5) as r:
            doc = json.loads(r.read())
        assert doc["paths"]["/v1/images/generations"]["post"]["security"] == [{"apiKey": []}]
        # the inference port serves neither metrics nor the document
        for path in ("/metrics", "/openapi.json"):
            with pytest.raises(urllib.error.HTTPError) as missing:
                urllib.request.urlopen(f"{plane.router_url}{path}", timeout=5)
            assert missing.value.code == 404
    finally:
        _set_config(plane, router_ratio=0.0, disc_ratio=0.0)


def test_forced_thresholds_escalate_and_route(plane):
    _set_config(plane, router_ratio=0.0, disc_ratio=1.0)  # every light result is escalated
    status, headers, body = _post(f"{plane.router_url}/v1/images/generations", {"prompt": "a violin", "n": 2})
    assert status == 200
    assert [d["model"] for d in body["data"]] == ["tiny-heavy", "tiny-heavy"]
    assert all(d["escalated"] for d in body["data"])
    assert headers["X-Hadis-Escalated"] == "true,true"
    _set_config(plane, router_ratio=1.0, disc_ratio=0.0)  # every prompt straight to heavy
    status, headers, body = _post(f"{plane.router_url}/v1/images/generations", {"prompt": "a violin"})
    assert body["data"][0]["model"] == "tiny-heavy" and not body["data"][0]["escalated"]
    assert _metric(plane, "hadis_router_routing_decisions_total", decision="escalated") >= 2
    assert _metric(plane, "hadis_router_routing_decisions_total", decision="direct_heavy") >= 1


def test_prometheus_scrapes_the_router_arrival_rate(plane, prometheus):
    from prometheus_api_client import PrometheusConnect

    _set_config(plane, router_ratio=0.0, disc_ratio=0.0)
    prom = PrometheusConnect(url=prometheus, disable_ssl=True)
    end = time.monotonic() + 30
    rate = []
    while time.monotonic() < end:  # traffic while Prometheus scrapes every second
        for _ in range(2):
            _post(f"{plane.router_url}/v1/images/generations", {"prompt": "a kite"})
        rate = prom.custom_query('sum by (cascade) (rate(hadis_router_arrivals_total{cascade="tiny"}[30s]))')
        if rate and float(rate[0]["value"][1]) > 0:
            break
        time.sleep(0.5)
    assert rate and float(rate[0]["value"][1]) > 0, rate
    # Triton's own metrics from both workers are scraped too
    workers = prom.custom_query("nv_inference_request_success")
    assert {w["metric"]["model"] for w in workers} >= {"tiny-light"}


def test_failed_replica_is_retried_on_another(plane):
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    live = f"127.0.0.1:{plane.worker_ports['tiny-light']}"
    _set_config(plane, light_endpoints=(dead, live), router_ratio=0.0, disc_ratio=0.0)
    before = _metric(plane, "hadis_router_worker_errors_total")
    for k in range(4):  # round robin starts on each replica in turn
        status, _h, body = _post(f"{plane.router_url}/v1/images/generations", {"prompt": f"a kite {k}"})
        assert status == 200 and body["data"][0]["model"] == "tiny-light"
    assert _metric(plane, "hadis_router_worker_errors_total") == before  # retried, not failed


def test_config_reload_under_traffic_drops_nothing(plane):
    url = f"{plane.router_url}/v1/images/generations"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(_post, url, {"prompt": f"a boat {k}", "seed": k}) for k in range(24)]
        for ratio in (0.5, 0.0, 0.3):
            _set_config(plane, router_ratio=ratio, disc_ratio=0.0)
        statuses = [f.result()[0] for f in futures]
    assert statuses == [200] * 24


def test_oversized_body_is_refused_with_json(plane):
    status, _h, body = _post(f"{plane.router_url}/v1/images/generations", {"prompt": "a" * 70_000})
    assert status == 413 and "limit" in body["error"]["message"]


def _readyz(plane: LocalPlane) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{plane.admin_url}/readyz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _wait_readyz(plane: LocalPlane, status: int, timeout_s: float = 30.0, light: list[str] | None = None) -> dict:
    """Wait for /readyz to answer ``status`` (and, when given, list ``light`` as the ready light
    endpoints: the router probes its workers on its own clock)."""

    def done(code: int, body: dict) -> bool:
        return code == status and (light is None or body["ready_endpoints"]["light"] == light)

    end = time.monotonic() + timeout_s
    code, body = _readyz(plane)
    while not done(code, body) and time.monotonic() < end:
        time.sleep(0.2)
        code, body = _readyz(plane)
    assert done(code, body), (code, body)
    return body


def test_router_is_ready_only_when_a_model_it_routes_to_answers(plane):
    """Readiness asks the model, not the server: a worker whose Triton server is up but which
    does not serve the configured model is not a ready endpoint. With no light model the heavy
    tier serves every request (ready, and a request then succeeds); with neither, not ready."""
    light = f"127.0.0.1:{plane.worker_ports['tiny-light']}"
    _set_config(plane, light_name="tiny-absent", router_ratio=0.0, disc_ratio=0.0)
    body = _wait_readyz(plane, 200, light=[])
    assert body["ready_endpoints"]["heavy"]
    with urllib.request.urlopen(f"http://{light}/v2/health/ready", timeout=5) as r:
        assert r.status == 200  # the server-level endpoint would have called it ready
    status, _h, served = _post(f"{plane.router_url}/v1/images/generations", {"prompt": "a red ball"}, timeout=30)
    assert status == 200 and served["data"][0]["model"] == "tiny-heavy", served  # ready meant it serves
    _set_config(plane, light_name="tiny-absent", heavy_name="tiny-absent-heavy", router_ratio=0.0, disc_ratio=0.0)
    body = _wait_readyz(plane, 503)
    assert body["ready_endpoints"] == {"light": [], "heavy": []}
    _set_config(plane, router_ratio=0.0, disc_ratio=0.0)
    _wait_readyz(plane, 200, light=[light])


def _holding_router(plane: LocalPlane, tmp_path: Path, hold: bool):
    """A router in this process over the plane's real workers, every image light. Its tiers have
    capacity figures (one image at a time per pod, a pod starts in 1 s), and the test reports
    their ready pods as an EndpointSlice watch would (the one part of a cluster not here)."""
    from hadis.router.config import Capacity, Limits
    from hadis.router.service import Router

    cfg = tiny_config(plane.worker_ports["tiny-light"], plane.worker_ports["tiny-heavy"], 0.0, 0.0, slo_s=8.0)
    cap = Capacity(base_s=0.5, per_replica=2.0, replicas=1, slots=1, start_s=1.0)
    cfg = replace(
        cfg,
        light=replace(cfg.light, capacity=cap),
        heavy=replace(cfg.heavy, capacity=cap),
        limits=Limits(hold=hold),
        cascade=f"holding-{str(hold).lower()}",
    )
    path = tmp_path / f"router-{hold}.yaml"
    path.write_text(dump_config(cfg))
    return Router(path)


async def _serve(router, n: int, then=None) -> list[tuple[int, dict]]:
    """``n`` concurrent requests through ``router``'s images API; ``then`` runs while they wait."""
    import asyncio

    import aiohttp
    from aiohttp import web

    from hadis.router.service import make_app

    runner = web.AppRunner(make_app(router))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1/images/generations"
    try:
        async with aiohttp.ClientSession() as http:

            async def one(k: int) -> tuple[int, dict]:
                async with http.post(url, json={"prompt": f"a held prompt {k}", "seed": k}) as r:
                    return r.status, await r.json()

            calls = asyncio.gather(*(one(k) for k in range(n)))
            if then is not None:
                await then()
            return list(await calls)
    finally:
        await runner.cleanup()


def test_requests_are_held_for_a_coming_pod_and_bound_late_not_shed(plane, tmp_path):
    """Holding on real workers: with no light or heavy pod ready yet but one planned (1 s to
    start), requests wait and are served when it is Ready; with holding off the same requests
    are refused at once. Then, with the pod Ready and one slot per pod, a burst is bound one
    image at a time (late binding): the rest wait at the router, none is refused."""
    import asyncio

    async def main(hold: bool) -> dict:
        router = _holding_router(plane, tmp_path, hold)
        light, heavy = router.tier_key("light"), router.tier_key("heavy")
        light_pod = f"127.0.0.1:{plane.worker_ports['tiny-light']}"
        router.endpoints_changed(light, ())  # the plan's light and heavy pods are starting
        router.endpoints_changed(heavy, ())
        seen = {"depth": 0, "bound": 0}

        async def pod_becomes_ready() -> None:
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                seen["depth"] = max(seen["depth"], router.queues[light].depth)
                await asyncio.sleep(0.02)
            router.endpoints_changed(light, (light_pod,))

        cold = await _serve(router, 3, pod_becomes_ready)

        async def watch_binding() -> None:
            pool, end = router.queues[light].pool, time.monotonic() + 60
            while (any(pool.in_flight.values()) or not seen["bound"]) and time.monotonic() < end:
                seen["bound"] = max(seen["bound"], pool.in_flight.get(light_pod, 0))
                seen["depth"] = max(seen["depth"], router.queues[light].depth)
                await asyncio.sleep(0.005)

        burst = await _serve(router, 5, watch_binding) if hold else []
        wait = router.metrics.registry.get_sample_value(
            "hadis_router_queue_wait_seconds_sum", {"cascade": router.cfg.cascade, "model": "tiny-light"}
        )
        for client in router.plane.clients.values():
            await client.close()
        return {"cold": cold, "burst": burst, "wait": wait, **seen}

    held = asyncio.run(main(hold=True))
    assert [status for status, _ in held["cold"]] == [200] * 3, held["cold"]
    assert all(d["model"] == "tiny-light" for _, body in held["cold"] for d in body["data"])
    assert held["depth"] >= 3 and held["wait"] >= 3 * 1.9  # each waited for the pod (2 s)
    assert [status for status, _ in held["burst"]] == [200] * 5
    assert held["bound"] == 1  # one image at the pod at a time; the others waited at the router

    shed = asyncio.run(main(hold=False))
    assert [status for status, _ in shed["cold"]] == [503] * 3, shed["cold"]
    assert all(body["error"]["code"] == "unavailable" for _, body in shed["cold"])
    assert shed["depth"] == 0  # refused at once, never held


def test_a_scaled_to_zero_cascade_holds_its_first_requests_past_the_slo_until_a_pod_starts(plane, tmp_path):
    """Scale to zero with the real workers: no pod in either tier and none planned; the router
    stays ready, asks for a wake once, holds the first requests past the SLO (2 s here, the pod
    comes after 3 s) and serves them when the pod is Ready. Without scale to zero the same
    requests are refused at once (nothing is coming)."""
    import asyncio

    from hadis.router.config import ColdStart

    async def main(cold: bool) -> dict:
        router = _holding_router(plane, tmp_path, hold=True)
        cfg = router.cfg
        zero = replace(cfg.light.capacity, replicas=0)
        cfg = replace(cfg, slo_s=2.0, light=replace(cfg.light, capacity=zero), heavy=replace(cfg.heavy, capacity=zero))
        if cold:
            cfg = replace(cfg, cold_start=ColdStart(30.0, "ns", "holding-wake"))
        router.config_path.write_text(dump_config(cfg))
        await router.reload_if_changed()
        light, heavy = router.tier_key("light"), router.tier_key("heavy")
        router.endpoints_changed(light, ())
        router.endpoints_changed(heavy, ())
        ready = router._ready()

        async def first_pod() -> None:
            await asyncio.sleep(3.0)
            router.endpoints_changed(light, (f"127.0.0.1:{plane.worker_ports['tiny-light']}",))

        t0 = time.monotonic()
        answers = await _serve(router, 2, first_pod)
        waited = time.monotonic() - t0
        wakes = router.metrics.registry.get_sample_value("hadis_router_cold_starts_total", {"cascade": cfg.cascade})
        for client in router.plane.clients.values():
            await client.close()
        return {"answers": answers, "waited": waited, "ready": ready, "wakes": wakes}

    cold = asyncio.run(main(cold=True))
    assert [status for status, _ in cold["answers"]] == [200, 200], cold["answers"]
    assert cold["ready"] and cold["wakes"] == 1  # one wake for the burst
    assert cold["waited"] >= 3.0  # past the 2 s SLO: held, not refused
    print(f"cold start held and served 2 requests in {cold['waited']:.2f}s (pod Ready after 3 s)")
    warm = asyncio.run(main(cold=False))
    assert [status for status, _ in warm["answers"]] == [503, 503] and not warm["ready"]


def test_heavy_worker_killed_under_traffic(plane):
    """Policy: with the heavy tier down, prompts for it are served by light, flagged degraded;
    no request waits past its deadline.

    The reason is what the router could know: an image whose heavy call failed (the tier is
    dead) is ``heavy_unavailable``; one that admission kept away from heavy (the remaining
    deadline too short for the heavy tier's predicted latency, which depends on this machine's
    speed) is ``heavy_saturated``. Either way it is light, flagged, and counted."""
    _set_config(plane, router_ratio=0.5, disc_ratio=1.0, slo_s=6.0)
    url = f"{plane.router_url}/v1/images/generations"
    heavy_errors = _metric(plane, "hadis_router_worker_errors_total", model="tiny-heavy")

    def one(k: int):
        t = time.monotonic()
        status, _h, body = _post(url, {"prompt": f"prompt number {k}", "seed": k}, timeout=20)
        return status, body, time.monotonic() - t

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, k) for k in range(12)]
        end = time.monotonic() + 10  # kill it under traffic: once requests are in flight
        while _metric(plane, "hadis_router_in_flight_requests") < 4 and time.monotonic() < end:
            time.sleep(0.05)
        plane.procs["tiny-heavy"].send_signal(signal.SIGKILL)
        os.killpg(plane.procs["tiny-heavy"].pid, signal.SIGKILL)  # the Triton server it started, too
        futures += [pool.submit(one, k) for k in range(12, 30)]
        results = [f.result() for f in futures]
    for status, body, seconds in results:
        assert seconds < 6.0 + 1.0, seconds  # within the SLO plus the HTTP round trip
        assert status in (200, 503), body
    late = [d for status, body, _s in results[12:] if status == 200 for d in body["data"]]
    assert late, "every request after the kill failed"
    for d in late:
        assert d["model"] == "tiny-light" and d["degraded"], d
        assert d["degraded_reason"] in ("heavy_unavailable", "heavy_saturated"), d
    unavailable = [d for d in late if d["degraded_reason"] == "heavy_unavailable"]
    # Half the prompts are routed straight to heavy with the whole SLO ahead of them: after the
    # kill, those reach the dead tier, fail, and are answered by light.
    assert unavailable, [d["degraded_reason"] for d in late]
    failed_calls = _metric(plane, "hadis_router_worker_errors_total", model="tiny-heavy") - heavy_errors
    assert failed_calls >= len(unavailable)  # each such image follows a heavy call that failed
    for reason in ("heavy_unavailable", "heavy_saturated"):
        flagged = sum(d["degraded_reason"] == reason for d in late)
        assert _metric(plane, "hadis_router_degraded_images_total", reason=reason) >= flagged


def test_stalled_chunked_uploads_keep_the_router_within_memory_and_it_still_serves(plane):
    """64 clients each start a chunked upload of 1 MiB and then stall (no final chunk). The body
    limit (maxBodyBytes, 64 KiB) holds for chunked bodies, so each is answered 413 once it
    passes the limit and nothing more of it is buffered; before, each was read whole and waited
    on for as long as the client liked. RSS before and after is printed."""
    import socket

    from test_router_fuzz import rss_kib

    pid = plane.procs["router"].pid
    before = rss_kib(pid)
    chunk = b"x" * (64 * 1024)
    sockets = []
    for _ in range(64):
        s = socket.create_connection(("127.0.0.1", plane.router_port), timeout=30)
        s.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n")
        sockets.append(s)
    statuses = []
    for s in sockets:
        try:
            for _ in range(16):  # up to 1 MiB, unless the router has answered and closed
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # refused mid-upload: the answer is already waiting
    peak = rss_kib(pid)
    for s in sockets:
        line = s.makefile("rb").readline()
        statuses.append(int(line.split()[1]) if line else 0)
        s.close()
    print(f"router RSS {before / 1024:.0f} MiB before, {peak / 1024:.0f} MiB with 64 stalled 1 MiB uploads")
    assert statuses == [413] * 64, statuses
    assert peak - before < 32 * 1024, (before, peak)  # 64 x 1 MiB would be 64 MiB
    status, _h, body = _post(f"{plane.router_url}/v1/images/generations", {"prompt": "a red ball"})
    assert status == 200 and body["data"], body
