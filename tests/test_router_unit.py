"""The router's pure parts: config parsing, request validation, admission."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hadis.core.errors import DataError
from hadis.local import tiny_config
from hadis.router.admission import TierLoad, admit
from hadis.router.api import ApiError, parse_generation_request
from hadis.router.config import Auth, dump_config, parse_config

CFG = tiny_config(8000, 8010)


def test_config_round_trips():
    assert parse_config(dump_config(CFG), "c.yaml") == CFG
    keyed = replace(CFG, auth=Auth("/etc/keys", requests_per_minute=30.0, burst=3))
    assert parse_config(dump_config(keyed), "c.yaml") == keyed


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"apiVersion": "v0"}, "apiVersion"),
        ({"cascade": "Not A Label"}, "cascade"),
        ({"sloSeconds": 0}, "sloSeconds"),
        ({"routerRatio": 1.5}, "routerRatio"),
        ({"size": "big"}, "size"),
        ({"light": {"name": "x", "endpoints": []}}, "light.endpoints"),
        ({"heavy": {"name": "", "endpoints": ["a:1"]}}, "heavy.name"),
        ({"scoring": {"mode": "learned"}}, "scoring.modelFile"),
        ({"limits": {"maxN": 0}}, "limits.maxN"),
        ({"limits": {"maxn": 2}}, "limits"),
        ({"auth": {"apiKeysDir": "keys"}}, "auth.apiKeysDir"),
        ({"auth": {"apiKeysDir": "/keys", "requestsPerMinute": 0}}, "auth.requestsPerMinute"),
        ({"auth": {"apiKeysDir": "/keys", "token": "x"}}, "auth"),
        ({"typo": 1}, ""),
    ],
)
def test_bad_configs_name_the_field(change, field):
    import yaml

    doc = yaml.safe_load(dump_config(CFG))
    doc.update(change)
    with pytest.raises(DataError) as err:
        parse_config(yaml.safe_dump(doc), "router.yaml")
    assert (err.value.field or "") == field


def _req(doc) -> bytes:
    return json.dumps(doc).encode()


def test_valid_request():
    r = parse_generation_request(_req({"prompt": "a cat", "n": 2, "size": "64x64", "response_format": "b64_json"}), CFG)
    assert (r.prompt, r.n, r.seed) == ("a cat", 2, None)
    assert parse_generation_request(_req({"prompt": "a cat", "seed": 7}), CFG).seed == 7


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"\xff\xfe", 400, None),
        (_req([1, 2]), 400, None),
        (_req({}), 400, "prompt"),
        (_req({"prompt": 3}), 400, "prompt"),
        (_req({"prompt": "   "}), 400, "prompt"),
        (_req({"prompt": "x" * 5000}), 400, "prompt"),
        (_req({"prompt": "a", "n": 99}), 400, "n"),
        (_req({"prompt": "a", "n": 0}), 400, "n"),
        (_req({"prompt": "a", "n": "2"}), 400, "n"),
        (_req({"prompt": "a", "n": True}), 400, "n"),
        (_req({"prompt": "a", "size": "1024x1024"}), 400, "size"),
        (_req({"prompt": "a", "response_format": "url"}), 400, "response_format"),
        (_req({"prompt": "a", "seed": -1}), 400, "seed"),
        (_req({"prompt": "a", "style": 3}), 400, "style"),  # ignored fields are still typed (the fuzz found it)
        (_req({"prompt": "a", "user": ["u"]}), 400, "user"),
        (b"{" + b" " * 70_000 + b"}", 413, None),
    ],
)
def test_bad_requests_get_a_clear_4xx(body, status, param):
    with pytest.raises(ApiError) as err:
        parse_generation_request(body, CFG)
    assert err.value.status == status
    assert err.value.param == param
    assert err.value.body()["error"]["message"]


@given(st.binary(max_size=300))
def test_any_bytes_are_a_request_or_a_4xx(body):
    try:
        r = parse_generation_request(body, CFG)
    except ApiError as e:
        assert 400 <= e.status < 500
        assert isinstance(e.body()["error"]["message"], str)
    else:
        assert r.prompt.strip() and 1 <= r.n <= CFG.limits.max_n


@given(
    st.dictionaries(
        st.sampled_from(["prompt", "n", "size", "response_format", "seed", "x"]),
        st.from_type(object) | st.none() | st.integers() | st.text(),
    )
)
def test_any_json_object_is_a_request_or_a_4xx(doc):
    try:
        body = json.dumps(doc).encode()
    except (TypeError, ValueError):
        return
    try:
        parse_generation_request(body, CFG)
    except ApiError as e:
        assert 400 <= e.status < 500


def test_admission_learns_base_latency_and_capacity():
    load = TierLoad()
    assert admit(load, 1, slo_s=6.0, max_in_flight=64).admitted  # nothing known yet: admit
    t = 0.0
    for _ in range(5):  # idle tier: each image alone takes 0.5 s
        ahead = load.start()
        t += 0.5
        load.finish(0.5, t, ahead)
    assert load.base_s == pytest.approx(0.5)
    assert load.capacity is None  # no window with waiting work yet
    # a busy tier: 4 images always in flight, one completes every 0.25 s (4 images/s)
    for _ in range(4):
        load.start()
    for _ in range(40):
        ahead = load.start()
        t += 0.25
        load.finish(1.0, t, ahead)
    assert load.base_s == pytest.approx(0.5)  # queued images do not inflate the base latency
    assert load.capacity == pytest.approx(4.0, rel=0.05)
    load.in_flight = 20  # 5 s of work ahead + 0.5 s: fits a 6 s SLO
    assert load.predicted_latency(1) == pytest.approx(5.5, rel=0.05)
    assert admit(load, 1, 6.0, 64).admitted
    load.in_flight = 30  # 7.5 s ahead: shed, retry after the excess
    a = admit(load, 1, 6.0, 64)
    assert not a.admitted and a.retry_after_s == pytest.approx(2.0, rel=0.1) and "SLO" in a.reason
    load.in_flight = 64
    assert admit(load, 1, 600.0, 64).reason == "in-flight limit reached"


def test_retry_after_header_is_whole_seconds():
    assert ApiError(503, "busy", retry_after_s=2.2).headers() == {"Retry-After": "3"}
    assert ApiError(400, "bad").headers() == {}


@contextlib.asynccontextmanager
async def _serving(app) -> AsyncIterator[int]:
    """``app`` (aiohttp) on a free loopback port for the block; yields the port."""
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]
    finally:
        await runner.cleanup()


def test_each_worker_call_opens_its_own_connection_so_a_service_spreads_them():
    """Behind a Service, kube-proxy balances connections: a kept-alive one would pin every call
    to one pod. Three calls must arrive on three connections, and a call slower than 2 s must
    not be cut off by the client (only the request's deadline may)."""
    import asyncio

    from aiohttp import web

    from hadis.router.config import Tier
    from hadis.router.triton import TierClient

    async def run() -> set:
        peers: set = set()

        async def live(request: web.Request) -> web.Response:
            peers.add(request.transport.get_extra_info("peername"))
            await asyncio.sleep(2.5)  # slower than any connect timeout: only the deadline may cut a call
            return web.Response()

        app = web.Application()
        app.router.add_get("/v2/health/live", live)
        async with _serving(app) as port:
            tier = TierClient(Tier("m", (f"127.0.0.1:{port}",)))
            try:
                client = tier._client_for(f"127.0.0.1:{port}")
                for _ in range(3):
                    assert await client.is_server_live()
            finally:
                await tier.close()
        return peers

    assert len(asyncio.run(run())) == 3


def test_the_openapi_document_states_this_routers_limits():
    from hadis.router.api import openapi_document

    doc = openapi_document(CFG, "1.2.3")
    assert doc["openapi"].startswith("3.") and doc["info"]["version"] == "1.2.3"
    post = doc["paths"]["/v1/images/generations"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["prompt"]
    assert body["properties"]["n"]["maximum"] == CFG.limits.max_n
    assert body["properties"]["prompt"]["maxLength"] == CFG.limits.max_prompt_chars
    assert body["properties"]["size"]["enum"] == [CFG.size, None]
    assert {"200", "400", "401", "408", "413", "429", "503", "504"} <= set(post["responses"])
    # the inference port's API (metrics and this document are on the admin port)
    assert set(doc["paths"]) == {"/v1/images/generations", "/healthz", "/readyz"}
    assert "security" not in post and "securitySchemes" not in doc["components"]  # no key asked for
    keyed = openapi_document(replace(CFG, auth=Auth("/keys")), "1.2.3")
    assert keyed["paths"]["/v1/images/generations"]["post"]["security"] == [{"apiKey": []}]
    assert keyed["components"]["securitySchemes"]["apiKey"] == {"type": "http", "scheme": "bearer"}
    assert "security" not in keyed["paths"]["/readyz"]["get"]  # the probes ask for no key


def test_a_chunked_body_is_held_to_the_limit_and_a_stalled_upload_times_out():
    """A chunked upload declares no length: it was read whole (up to 16 MiB) and for as long as
    the client liked. Now it is counted as it arrives (413 past maxBodyBytes, nothing more
    buffered) and a body not received within bodyTimeoutSeconds is a 408."""
    import asyncio

    from aiohttp import web

    from hadis.router.api import ApiError
    from hadis.router.config import Limits
    from hadis.router.service import read_body

    limits = Limits(max_body_bytes=2048, body_timeout_s=0.5)
    seen: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        try:
            body = await read_body(request, limits)
        except ApiError as e:
            return web.json_response(e.body(), status=e.status)
        seen.append(len(body))
        return web.Response(text="ok")

    async def send(port: int, chunks: list[bytes], end: bool) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for c in chunks:
            writer.write(b"%x\r\n%s\r\n" % (len(c), c))
        if end:
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        writer.close()
        return status

    async def run() -> list[int]:
        app = web.Application()
        app.router.add_post("/", handler)
        async with _serving(app) as port:
            return [
                await send(port, [b"a" * 1000, b"b" * 1000], end=True),  # 2000 bytes: within
                await send(port, [b"a" * 1000] * 5, end=True),  # 5000 bytes: over
                await send(port, [b"a" * 100], end=False),  # never finished
            ]

    assert asyncio.run(run()) == [200, 413, 408]
    assert seen == [2000]
