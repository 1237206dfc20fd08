"""API keys and per-key quotas (hadis.router.auth), and the router refusing before it reads a body."""

from __future__ import annotations

import asyncio
import json

import pytest

from hadis.router.auth import MIN_TOKEN_CHARS, Quotas, TokenBucket, bearer_token, parse_keys, read_keys

TEAM_A, TEAM_B = "sk-team-a-0123456789abcdef", "sk-team-b-0123456789abcdef"


def test_keys_name_their_tokens_and_short_or_blank_ones_are_ignored():
    keys = parse_keys({"team-a": TEAM_A + "\n", "team-b": TEAM_B, "weak": "abc", "blank": "  \n"})
    assert keys.name_of(TEAM_A) == "team-a" and keys.name_of(TEAM_B) == "team-b"
    assert keys.name_of("abc") is None and keys.name_of("") is None and keys.name_of(TEAM_A + "x") is None
    assert sorted(keys.ignored) == [
        f"blank (token shorter than {MIN_TOKEN_CHARS} characters)",
        f"weak (token shorter than {MIN_TOKEN_CHARS} characters)",
    ]
    assert TEAM_A.encode() not in repr(keys).encode()  # only digests are held


def test_a_mounted_secret_directory_is_read_without_its_data_links(tmp_path):
    """The kubelet mounts a Secret as files plus ``..data`` and a timestamped folder: only the
    keys' own names count."""
    data = tmp_path / "..2026_12_04_18_00_00.1"
    data.mkdir()
    (data / "team-a").write_text(TEAM_A)
    (tmp_path / "..data").symlink_to(data.name)
    (tmp_path / "team-a").symlink_to("..data/team-a")
    keys = read_keys(tmp_path)
    assert set(keys.by_digest.values()) == {"team-a"} and not keys.ignored


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (f"Bearer {TEAM_A}", TEAM_A),
        (f"bearer   {TEAM_A} ", TEAM_A),
        (f"Basic {TEAM_A}", None),
        ("Bearer", None),
        ("Bearer   ", None),
        ("", None),
        (None, None),
    ],
)
def test_the_bearer_token_of_an_authorization_header(header, token):
    assert bearer_token(header) == token


def test_a_token_bucket_allows_its_burst_then_its_rate_and_says_how_long_to_wait():
    b = TokenBucket(rate=0.5, burst=2)  # 30 a minute, 2 at once
    assert [b.take(100.0), b.take(100.0)] == [0.0, 0.0]
    assert b.take(100.0) == pytest.approx(2.0)  # one token in 2 s
    assert b.take(101.0) == pytest.approx(1.0)
    assert b.take(102.0) == 0.0
    assert b.take(1000.0) == 0.0 and b.take(1000.0) == 0.0 and b.take(1000.0) > 0  # refills to burst, no more


def test_each_key_has_its_own_quota_shared_by_the_router_replicas():
    q = Quotas(requests_per_minute=60, burst=4)
    assert [q.retry_after("a", 0.0) for _ in range(4)] == [0.0] * 4
    assert q.retry_after("a", 0.0) == pytest.approx(1.0)
    assert q.retry_after("b", 0.0) == 0.0  # another key: untouched
    # two routers behind one Service: each admits half of a key's quota (30 a minute, burst 2)
    shared = Quotas(requests_per_minute=60, burst=4)
    assert [shared.retry_after("a", 0.0, routers=2) for _ in range(2)] == [0.0, 0.0]
    assert shared.retry_after("a", 0.0, routers=2) == pytest.approx(2.0)


def _router(tmp_path, auth: dict | None):
    """A Router on a config whose workers do not exist: what is checked before them is tested."""
    import yaml

    from hadis.local import tiny_config
    from hadis.router.config import dump_config
    from hadis.router.service import Router

    doc = yaml.safe_load(dump_config(tiny_config(1, 2)))
    doc["limits"]["bodyTimeoutSeconds"] = 0.2  # a body never sent: a quick 408
    if auth is not None:
        doc["auth"] = auth
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(doc))
    return Router(path)


def _answer(router, headers: dict[str, str]) -> tuple[int, dict, dict]:
    """The router's answer to a generation request with ``headers`` and a body never sent (a
    request refused for its key must be refused before its body is read)."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    async def run():
        protocol_reader = asyncio.StreamReader(limit=2**16)  # never fed: reading it would hang
        req = make_mocked_request(
            "POST", "/v1/images/generations", headers=headers, payload=protocol_reader, app=web.Application()
        )
        return await asyncio.wait_for(router.handle_generate(req), 5)

    resp = asyncio.run(run())
    return resp.status, dict(resp.headers), json.loads(resp.body)


def test_no_key_a_wrong_key_and_an_over_quota_key_are_refused_before_the_body_is_read(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "team-a").write_text(TEAM_A)
    router = _router(tmp_path, {"apiKeysDir": str(keys), "requestsPerMinute": 1, "burst": 1})
    for headers in ({}, {"Authorization": "Bearer sk-wrong-0123456789abcdef"}, {"Authorization": TEAM_A}):
        status, h, body = _answer(router, headers)
        assert status == 401 and h["WWW-Authenticate"].startswith("Bearer")
        assert body["error"]["code"] == "invalid_api_key" and body["error"]["type"] == "invalid_request_error"
    rejected = router.metrics.rejected.labels("tiny", "unauthorized")._value.get()
    assert rejected == 3
    # a good key spends its one request (the body then is read: here it never comes, a 408)
    status, _h, body = _answer(router, {"Authorization": f"Bearer {TEAM_A}"})
    assert status == 408
    status, h, body = _answer(router, {"Authorization": f"Bearer {TEAM_A}"})
    assert status == 429 and body["error"]["code"] == "rate_limit_exceeded" and 1 <= int(h["Retry-After"]) <= 60
    assert "team-a" in body["error"]["message"] and TEAM_A not in json.dumps(body)
    assert router.metrics.key_requests.labels("tiny", "team-a")._value.get() == 1
    assert router.metrics.rejected.labels("tiny", "quota")._value.get() == 1


def test_a_router_without_auth_asks_for_no_key(tmp_path):
    router = _router(tmp_path, None)
    assert _answer(router, {})[0] == 408  # on to reading the body


def test_keys_are_reread_when_the_secret_changes_and_none_left_refuses_everyone(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "team-a").write_text(TEAM_A)
    router = _router(tmp_path, {"apiKeysDir": str(keys)})
    assert router.keys is not None and router.keys.name_of(TEAM_A) == "team-a"
    (keys / "team-b").write_text(TEAM_B)
    (keys / "team-a").unlink()
    router._reload_keys(router.cfg.auth)
    assert router.keys.name_of(TEAM_A) is None and router.keys.name_of(TEAM_B) == "team-b"
    (keys / "team-b").unlink()
    router._reload_keys(router.cfg.auth)
    assert _answer(router, {"Authorization": f"Bearer {TEAM_B}"})[0] == 401
