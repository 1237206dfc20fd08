"""The router's data-plane logic without a cluster: which pod gets an image, admission shared by
several routers, and the per-config plane that a reload swaps whole."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from hadis.local import tiny_config
from hadis.router.admission import TierLoad, admit
from hadis.router.config import Capacity, Discovery, Routers, dump_config, parse_config
from hadis.router.dispatch import EndpointPool, ready_addresses, ready_count
from hadis.router.triton import WorkerResult


def _slice(name: str, port: int, *endpoints: tuple[str, dict]) -> dict:
    return {
        "metadata": {"name": name},
        "ports": [{"name": "http", "port": port}, {"name": "metrics", "port": 8002}],
        "endpoints": [{"addresses": [ip], "conditions": cond} for ip, cond in endpoints],
    }


def test_ready_addresses_skip_pods_that_are_not_ready_or_terminating():
    slices = [
        _slice("a", 8000, ("10.0.0.1", {"ready": True}), ("10.0.0.2", {"ready": False})),
        _slice(
            "b",
            8000,
            ("10.0.0.3", {}),  # no condition: ready, as the API defines it
            ("10.0.0.4", {"ready": False, "serving": True, "terminating": True}),  # draining
            ("fd00::5", {"ready": True}),
        ),
    ]
    assert ready_addresses(slices) == ("10.0.0.1:8000", "10.0.0.3:8000", "[fd00::5]:8000")
    assert ready_addresses(slices, "grpc") == ()
    assert ready_count(slices) == 3


def test_the_pod_with_the_least_in_flight_goes_first_and_ties_take_turns():
    pool = EndpointPool(("svc:8000",))
    assert pool.order() == ["svc:8000"] and pool.source == "service"
    pool.update(("a:1", "b:1", "c:1"))
    assert pool.source == "endpointslices"
    firsts = []
    for _ in range(3):  # nothing in flight: each pod in turn
        first = pool.order()[0]
        firsts.append(first)
        pool.start(first)
    assert sorted(firsts) == ["a:1", "b:1", "c:1"]
    pool.start("a:1")
    pool.start("b:1")
    assert pool.order()[0] == "c:1"  # a and b hold 2 each, c holds 1
    pool.finish("a:1")
    pool.finish("a:1")
    assert pool.order()[0] == "a:1"
    assert set(pool.order()) == {"a:1", "b:1", "c:1"}  # the rest stay, for fail-over


def test_a_removed_pod_gets_nothing_new_and_its_count_ends_with_its_last_image():
    pool = EndpointPool(("svc:8000",))
    pool.update(("a:1", "b:1"))
    pool.start("a:1")
    pool.update(("b:1",))  # a is terminating
    assert pool.order() == ["b:1"]
    assert pool.in_flight["a:1"] == 1
    pool.finish("a:1")
    assert "a:1" not in pool.in_flight
    pool.update(())  # no ready pod: none, not the Service (it would pick a terminating one)
    assert pool.order() == [] and pool.source == "endpointslices"
    pool.update(None)  # the watch is unavailable: the Service, as without a watch
    assert pool.order() == ["svc:8000"] and pool.source == "service"


def test_a_cold_router_admits_against_the_profile_not_without_limit():
    load = TierLoad(prior_base_s=1.0, prior_capacity=4.0)  # 1 s alone, 4 images/s busy
    admitted = 0
    while admit(load, 1, slo_s=6.0, max_in_flight=1000).admitted:
        load.start()
        admitted += 1
    assert admitted == 21  # 20 ahead drain in 5 s, plus 1 s of its own: 6 s
    assert load.predicted_latency() == pytest.approx(21 / 4 + 1)


@pytest.mark.parametrize("routers", [1, 3])
def test_routers_together_admit_what_one_router_would(routers):
    """N routers, each told it holds 1/N of the tier: their admissions add up to one router's."""
    loads = [TierLoad(prior_base_s=1.0, prior_capacity=12.0, share=1 / routers) for _ in range(routers)]
    total = 0
    for _ in range(200):  # a burst, spread over the routers in turn
        for load in loads:
            if admit(load, 1, 6.0, 1000).admitted:
                load.start()
                total += 1
    assert total == pytest.approx(61, abs=routers)  # 60 ahead drain in 5 s at 12/s, plus one
    limited = [TierLoad(share=1 / routers) for _ in range(routers)]
    for load in limited:
        while admit(load, 1, 6.0, 64).admitted:
            load.start()
    assert sum(x.in_flight for x in limited) == pytest.approx(64, abs=routers)


def test_the_measured_speed_scales_the_profiles_capacity_and_light_traffic_is_no_capacity():
    load = TierLoad(prior_base_s=1.0, prior_capacity=4.0)
    t = 0.0
    for _ in range(3):  # images alone take 2 s: this machine runs at half the profiled speed
        ahead = load.start()
        t += 2.0
        load.finish(2.0, t, ahead)
    assert load.effective() == (pytest.approx(2.0), pytest.approx(2.0))
    # 2 images always in flight, one done every 1 s: the offered load, not what the tier can do
    load.start()
    for _ in range(20):
        ahead = load.start()
        t += 1.0
        load.finish(2.0, t, ahead)
    assert load.capacity == pytest.approx(1.0, rel=0.05)  # the busy-window throughput...
    assert load.effective()[1] == pytest.approx(2.0)  # ...does not replace the profile's capacity


def test_config_with_discovery_capacity_and_routers_round_trips():
    base = tiny_config(8000, 8010)
    cfg = dataclasses.replace(
        base,
        light=dataclasses.replace(
            base.light, discovery=Discovery("ns", "c-tiny-light"), capacity=Capacity(1.0, 4.0, 2)
        ),
        routers=Routers(3, Discovery("ns", "c-router")),
    )
    assert parse_config(dump_config(cfg), "c.yaml") == cfg


# ---------------------------------------------------------------------------------- planes


class HeldTier:
    """A stand-in for a tier's Triton client (its pool and generate), that answers when told."""

    def __init__(self, real, name: str, confidence: float):
        self.pool, self.queue = real.pool, real.queue
        self.name = name
        self.confidence = confidence
        self.release = asyncio.Event()
        self.calls = 0

    async def generate(self, prompt, seed, deadline, bind_by=None) -> WorkerResult:
        self.calls += 1
        await self.release.wait()
        return WorkerResult(b"png", self.confidence, "tiny", self.name, 0.01)

    async def close(self) -> None:
        pass


def _write(path, cfg) -> None:
    path.write_text(dump_config(cfg))


def test_a_reload_swaps_the_plane_whole_and_keeps_only_what_still_applies(tmp_path):
    from hadis.router.service import Router

    base = dataclasses.replace(tiny_config(8000, 8010), disc_ratio=1.0)
    path = tmp_path / "router.yaml"
    _write(path, base)
    router = Router(path)
    old = router.plane

    async def run():
        _write(path, dataclasses.replace(base, router_ratio=0.5))  # same models: new shares only
        path.touch()
        assert await router.reload_if_changed()
        same = router.plane
        assert same is not old and same.cfg.router_ratio == 0.5
        assert same.loads["light"] is old.loads["light"] and same.loads["heavy"] is old.loads["heavy"]
        assert same.conf_pct is old.conf_pct and same.clients["heavy"] is old.clients["heavy"]
        other = dataclasses.replace(base, heavy=dataclasses.replace(base.heavy, name="other-heavy"))
        _write(path, other)
        assert await router.reload_if_changed()
        new = router.plane
        assert new.loads["heavy"] is not same.loads["heavy"]  # a new model: its own load
        assert new.clients["heavy"] is not same.clients["heavy"]
        assert new.loads["light"] is same.loads["light"] and new.conf_pct is same.conf_pct
        _write(path, dataclasses.replace(other, light=dataclasses.replace(base.light, name="other-light")))
        assert await router.reload_if_changed()
        assert router.plane.conf_pct is not new.conf_pct  # a new light model's confidences

    asyncio.run(run())


def test_an_escalation_after_a_reload_uses_and_names_the_old_heavy_model(tmp_path):
    """A request escalates with the config it started with: the old heavy client, the old label."""
    from hadis.router.service import Router, build_plane

    base = dataclasses.replace(tiny_config(8000, 8010), disc_ratio=1.0)
    path = tmp_path / "router.yaml"
    _write(path, base)
    router = Router(path)
    light = HeldTier(router.plane.clients["light"], "tiny-light", confidence=0.1)
    heavy = HeldTier(router.plane.clients["heavy"], "tiny-heavy", confidence=None)
    router.plane = dataclasses.replace(router.plane, clients={"light": light, "heavy": heavy})

    async def run():
        task = asyncio.create_task(router._image(router.plane, "light", "a cat", 1, 1e18))
        await asyncio.sleep(0)
        other = dataclasses.replace(base, heavy=dataclasses.replace(base.heavy, name="other-heavy"))
        router.plane = build_plane(other, router.plane, router.queues)
        new_heavy = HeldTier(router.plane.clients["heavy"], "other-heavy", confidence=None)
        new_heavy.release.set()
        router.plane = dataclasses.replace(router.plane, clients={**router.plane.clients, "heavy": new_heavy})
        light.release.set()
        heavy.release.set()
        return await task

    outcome = asyncio.run(run())
    assert outcome.escalated and outcome.model == "tiny-heavy"
    assert heavy.calls == 1 and router.plane.clients["heavy"].calls == 0


def test_a_changed_router_model_file_is_reloaded_and_a_bad_one_keeps_the_old(tmp_path):
    """As a mounted ConfigMap updates: the same path, new content."""
    from pathlib import Path

    from hadis.router.config import Scoring
    from hadis.router.service import Router

    models = Path(__file__).resolve().parents[1] / "profiles" / "router"
    model = tmp_path / "router-model.json"
    model.write_bytes((models / "learned-sdxl-lightning-2step.json").read_bytes())
    cfg = dataclasses.replace(tiny_config(8000, 8010), scoring=Scoring("learned", str(model)))
    path = tmp_path / "router.yaml"
    _write(path, cfg)
    router = Router(path)
    first = router.plane
    prompt = "three glass spheres stacked on a blue cube, left of a green pyramid"

    async def run():
        assert not await router.reload_if_changed()  # nothing changed
        model.write_bytes((models / "learned-sd3.5-medium.json").read_bytes())
        assert await router.reload_if_changed()
        assert router.plane.scorer is not first.scorer and router.plane.score_pct is not first.score_pct
        assert router.plane.scorer.score(prompt) != first.scorer.score(prompt)
        second = router.plane
        model.write_text("{not json")
        assert not await router.reload_if_changed()
        assert router.plane is second  # the bad file is refused; the router keeps scoring

    asyncio.run(run())


def test_light_down_heavy_serves_in_time_and_both_down_is_unavailable(tmp_path):
    from hadis.router.service import Router
    from hadis.router.triton import WorkerUnavailable

    class Down(HeldTier):
        async def generate(self, prompt, seed, deadline, bind_by=None):
            self.calls += 1
            raise WorkerUnavailable("tiny-light: connection refused")

    path = tmp_path / "router.yaml"
    _write(path, tiny_config(8000, 8010))
    router = Router(path)
    light = Down(router.plane.clients["light"], "tiny-light", 0.5)
    heavy = HeldTier(router.plane.clients["heavy"], "tiny-heavy", None)
    heavy.release.set()
    plane = dataclasses.replace(router.plane, clients={"light": light, "heavy": heavy})
    outcome = asyncio.run(router._image(plane, "light", "a cat", 1, 1e18))
    assert outcome.model == "tiny-heavy" and not outcome.escalated and outcome.degraded is None
    c = router.cfg.cascade
    assert (
        router.metrics.registry.get_sample_value(
            "hadis_router_routing_decisions_total", {"cascade": c, "decision": "heavy_fallback"}
        )
        == 1
    )
    plane = dataclasses.replace(plane, clients={"light": light, "heavy": Down(heavy, "tiny-heavy", None)})
    with pytest.raises(WorkerUnavailable):
        asyncio.run(router._image(plane, "light", "a cat", 1, 1e18))


def test_n_images_are_predicted_in_seconds_not_seconds_times_seconds():
    """n images finish after the n - 1 before the last drain at the tier's throughput, plus one
    image's time. An idle 8 s tier of 0.5 images/s (batches of 4) predicts 10 s for n=2, not
    24 s (shed forever under a 12 s SLO); a fast tier is not over-admitted for large n."""
    slow = TierLoad(prior_base_s=8.0, prior_capacity=0.5)
    assert slow.predicted_latency(2) == pytest.approx(10.0)
    assert admit(slow, 2, 12.0, 64).admitted
    fast = TierLoad(prior_base_s=0.1, prior_capacity=100.0)
    assert fast.predicted_latency(50) == pytest.approx(0.59)
    assert not admit(fast, 50, 0.5, 1000).admitted  # 49 images ahead of the last at 100/s
    assert fast.predicted_latency(1) == pytest.approx(0.1)


def test_the_router_stays_ready_while_heavy_alone_can_serve(tmp_path):
    """During a light rollout (or a re-plan to another light model) heavy serves every request
    (heavy_fallback): the router stays in its Service; with neither tier it leaves."""
    from hadis.router.service import Router

    path = tmp_path / "router.yaml"
    _write(path, tiny_config(8000, 8010))
    router = Router(path)
    router.ready_endpoints = {"light": set(), "heavy": {"10.0.0.9:8000"}}
    assert asyncio.run(router.handle_readyz(None)).status == 200
    router.ready_endpoints = {"light": set(), "heavy": set()}
    assert asyncio.run(router.handle_readyz(None)).status == 503


def test_a_malformed_worker_answer_fails_over_and_is_counted(tmp_path):
    """Two replicas answer 200 with a body that is not the protocol's: each is tried once, each
    bad answer counted, and the tier says it is unavailable (the API's JSON 503), not a 500."""
    from aiohttp import web

    from hadis.router.service import Router
    from hadis.router.triton import WorkerUnavailable

    hits: list[int] = []

    async def run():
        async def garbage(request: web.Request) -> web.Response:
            hits.append(request.url.port)
            return web.Response(status=200, text="<html>not an inference answer</html>")

        app = web.Application()
        app.router.add_post("/v2/models/{model}/infer", garbage)
        runner = web.AppRunner(app)
        await runner.setup()
        sites = [web.TCPSite(runner, "127.0.0.1", 0) for _ in range(2)]
        for site in sites:
            await site.start()
        ports = [site._server.sockets[0].getsockname()[1] for site in sites]
        path = tmp_path / "router.yaml"
        _write(path, tiny_config(ports[0], ports[1]))
        router = Router(path)
        client = router.plane.clients["light"]
        client.pool.update(tuple(f"127.0.0.1:{p}" for p in ports))
        try:
            with pytest.raises(WorkerUnavailable, match="malformed answer"):
                await client.generate("a cat", 1, asyncio.get_running_loop().time() + 1e6)
        finally:
            await client.close()
            await runner.cleanup()
        bad = router.metrics.registry.get_sample_value(
            "hadis_router_worker_bad_answers_total", {"cascade": router.cfg.cascade, "model": client.tier.name}
        )
        return sorted(ports), bad

    ports, bad = asyncio.run(run())
    assert sorted(hits) == ports  # the second replica was tried after the first's bad answer
    assert bad == 2


@pytest.mark.parametrize("hold", [True, False])
def test_a_prompt_due_at_a_full_light_tier_overflows_to_heavy_when_heavy_can_finish_it(tmp_path, hold):
    """Every prompt scores easy (router ratio 0) and the light tier cannot finish one more
    within the SLO: heavy, with room, serves it (decision "overflow") instead of a 503; with
    heavy full too the request is shed."""
    from hadis.router.api import ApiError, GenerationRequest
    from hadis.router.service import Router

    path = tmp_path / "router.yaml"
    cfg = tiny_config(8000, 8010, router_ratio=0.0, disc_ratio=0.0)
    _write(path, dataclasses.replace(cfg, limits=dataclasses.replace(cfg.limits, hold=hold)))
    router = Router(path)
    light, heavy = router.plane.loads["light"], router.plane.loads["heavy"]
    light.prior_base_s, light.prior_capacity = 1.0, 4.0
    heavy.prior_base_s, heavy.prior_capacity = 3.0, 4.0
    for _ in range(24):  # 24 images ahead at 4/s: the next is done in 7 s, past the 6 s SLO
        light.start()
    req = GenerationRequest("a red apple", 1, None)
    assert router._route(router.plane, req).entry == "overflow"

    for _ in range(16):  # heavy full too: 16 ahead at 4/s and 3 s for the last, past 6 s
        heavy.start()
    with pytest.raises(ApiError) as refused:
        router._route(router.plane, req)
    assert refused.value.status == 503

    tier = HeldTier(router.plane.clients["heavy"], "tiny-heavy", None)
    tier.release.set()
    plane = dataclasses.replace(router.plane, clients={**router.plane.clients, "heavy": tier})
    outcome = asyncio.run(router._image(plane, "overflow", req.prompt, 1, 1e18))
    assert outcome.model == "tiny-heavy" and outcome.degraded is None and tier.calls == 1
    sample = router.metrics.registry.get_sample_value
    assert sample("hadis_router_routing_decisions_total", {"cascade": "tiny", "decision": "overflow"}) == 1
    assert sample("hadis_router_routing_decisions_total", {"cascade": "tiny", "decision": "direct_heavy"}) == 0


def test_requests_that_find_the_pods_gone_each_get_a_json_answer(tmp_path):
    """When a tier's pods have gone (scale to zero, a re-plan), every request that arrives closes
    the Triton clients of the gone pods. Three at once each took the same list and the second
    to close a client found it taken (a KeyError: a text/plain 500, the first cold-start request's
    answer on the real node). Each now gets the API's JSON 503, and no fault is counted."""
    import aiohttp
    from aiohttp import web

    from hadis.router.service import Router, make_app

    async def run() -> list[tuple[int, dict]]:
        path = tmp_path / "router.yaml"
        _write(path, tiny_config(1, 2))
        router = Router(path)
        for tier in ("light", "heavy"):
            client = router.plane.clients[tier]
            client.pool.update(("10.255.0.1:8000", "10.255.0.2:8000", "10.255.0.3:8000"))
            for endpoint in client.pool.candidates():
                client._client_for(endpoint)  # the clients of pods that served before
            client.pool.update(())  # gone
        runner = web.AppRunner(make_app(router))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1/images/generations"
        try:
            async with aiohttp.ClientSession() as s:

                async def post(k: int) -> tuple[int, dict]:
                    async with s.post(url, json={"prompt": f"a cat number {k}"}) as r:
                        return r.status, await r.json(content_type=None)

                answers = await asyncio.gather(*(post(k) for k in range(3)))
        finally:
            await runner.cleanup()
        internal = router.metrics.registry.get_sample_value(
            "hadis_router_rejected_requests_total", {"cascade": router.cfg.cascade, "reason": "internal"}
        )
        assert internal == 0
        return answers

    answers = asyncio.run(run())
    assert [status for status, _ in answers] == [503] * 3, answers
    assert {body["error"]["code"] for _, body in answers} == {"unavailable"}


def test_a_fault_in_the_router_is_a_counted_json_500_not_a_bare_one(tmp_path, monkeypatch, caplog):
    """Whatever fails inside the router on a request (a bug, injected here) answers the API's
    JSON error with the request id, counts reason="internal" and logs the traceback."""
    import aiohttp
    from aiohttp import web

    from hadis.router.service import Router, make_app

    def broken(*_args, **_kwargs):
        raise RuntimeError("injected fault")

    async def run() -> tuple[int, dict, dict]:
        path = tmp_path / "router.yaml"
        _write(path, tiny_config(1, 2))
        router = Router(path)
        monkeypatch.setattr(router, "_route", broken)
        runner = web.AppRunner(make_app(router))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1/images/generations"
        try:
            async with aiohttp.ClientSession() as s, s.post(url, json={"prompt": "a cat"}) as r:
                answer = r.status, {k.lower(): v for k, v in r.headers.items()}, await r.json(content_type=None)
        finally:
            await runner.cleanup()
        internal = router.metrics.registry.get_sample_value(
            "hadis_router_rejected_requests_total", {"cascade": router.cfg.cascade, "reason": "internal"}
        )
        assert internal == 1
        return answer

    status, headers, body = asyncio.run(run())
    assert status == 500 and headers["content-type"].startswith("application/json")
    assert body["error"]["type"] == "server_error" and body["error"]["code"] == "internal_error"
    assert headers["x-request-id"]
    assert "injected fault" in caplog.text
