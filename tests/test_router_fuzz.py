"""Fuzzing the router's HTTP API from its own OpenAPI document (schemathesis) on real processes.

The tiny plane (Triton workers and the router) answers requests that schemathesis generates
from ``/openapi.json``, valid and not: no answer may be a 5xx, every 4xx must be in OpenAI's
error shape, and the router's memory must stay flat. ``HADIS_FUZZ_EXAMPLES`` sets the budget
(``make fuzz`` runs a longer one).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from hadis.local import LocalPlane, up_tiny

pytestmark = pytest.mark.dataplane
EXAMPLES = int(os.environ.get("HADIS_FUZZ_EXAMPLES", "60"))
SEEN: dict[str, list] = {"status": [], "rss_kib": []}


@pytest.fixture(scope="module")
def plane(tmp_path_factory) -> LocalPlane:
    p = up_tiny(tmp_path_factory.mktemp("fuzz"), router_ratio=0.3, disc_ratio=0.3, progress=lambda _l: None)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def api(plane):
    schema = schemathesis.openapi.from_url(f"{plane.admin_url}/openapi.json")
    schema.config.update(base_url=plane.router_url, request_timeout=60)
    return schema


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_no_request_gets_a_server_error_and_every_4xx_is_openai_shaped(plane, api):
    """Every operation of the document, with valid requests and invalid ones (types, ranges,
    missing fields: what a hostile client sends); hypothesis drives schemathesis's strategies."""
    seen = SEEN["status"]

    def check(case) -> None:
        response = case.call()
        seen.append(response.status_code)
        SEEN["rss_kib"].append(rss_kib(plane.procs["router"].pid))
        assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:300]}"
        if 400 <= response.status_code < 500:
            error = response.json()["error"]
            assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)
        case.validate_response(response)  # status, content type, headers and body as documented

    operations = [result.ok() for result in api.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {"POST /v1/images/generations", "GET /readyz"}
    for op in operations:
        # invalid requests where there is something to get wrong: the operations with a body
        modes = list(schemathesis.GenerationMode) if len(op.body) else [schemathesis.GenerationMode.POSITIVE]
        for mode in modes:
            run = settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )(given(case=op.as_strategy(generation_mode=mode))(check))
            run()


def test_the_fuzz_run_covered_both_outcomes_and_memory_stayed_flat():
    """Runs after the fuzz (file order): it saw answers and refusals, and the router's resident
    memory after the run is within 20 MiB of where it was after the first tenth of it."""
    statuses, rss = SEEN["status"], SEEN["rss_kib"]
    print(
        f"\nrouter fuzz: {len(statuses)} requests, {sum(s == 200 for s in statuses)} answered 200, "
        f"{sum(400 <= s < 500 for s in statuses)} refused 4xx, {sum(s >= 500 for s in statuses)} 5xx; "
        f"router RSS {rss[len(rss) // 10] / 1024:.1f} -> {rss[-1] / 1024:.1f} MiB"
    )
    assert len(statuses) >= EXAMPLES and 200 in statuses and any(400 <= s < 500 for s in statuses)
    assert rss[-1] - rss[len(rss) // 10] < 20 * 1024
