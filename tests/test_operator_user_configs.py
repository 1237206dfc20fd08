"""Defects that our own favourable set-up hid, each in the configuration users run: a cascade
that lists some of its profile's models, a 15-30 s scrape, one cascade name in two namespaces,
a dead Prometheus beside a live one, a budget the CRD alone cannot judge, a model removed."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from hadis.core.bundle import parse_configmap
from hadis.operator import builders, logic, prom
from hadis.operator.spec import CascadeSpec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def l40s():
    return parse_configmap((ROOT / "profiles" / "configmap-l40s.yaml").read_text())


def spec(models: list[str], **over) -> CascadeSpec:
    raw = {
        "models": [{"name": m, "workerSpec": m} for m in models],
        "sloSeconds": 10,
        "gpuBudget": {"max": 8},
        "profile": {"configMapName": "hadis-l40s"},
        **over,
    }
    return CascadeSpec.parse(raw)


def test_a_cascade_listing_a_subset_of_its_profile_is_planned_with_its_own_models(l40s):
    """The shipped L40S profile and a cascade of sd3.5-medium and sd3.5-large: on the whole
    table the plan was sd3.5-large-turbo -> sd3.5-medium, a pair it does not run."""
    s = spec(["sd3.5-medium", "sd3.5-large"])
    checked = logic.plannable(s, l40s, "hadis-l40s")
    assert checked.bundle is not None and set(checked.bundle.profile.names) == {"sd3.5-medium", "sd3.5-large"}
    for rate in (0.5, 4.0, 40.0):
        d = logic.decide(checked.bundle, s, rate, None)
        assert (d.plan.config.light, d.plan.config.heavy) == ("sd3.5-medium", "sd3.5-large")
        assert sum(d.replicas.values()) >= 2 and set(d.replicas) == {"sd3.5-medium", "sd3.5-large"}


def test_models_no_row_pairs_and_a_budget_no_pair_fits_are_conditions(l40s):
    unknown = logic.plannable(spec(["sd3.5-medium", "sd9"]), l40s, "p")
    assert (unknown.bundle, unknown.reason) == (None, "ProfileMismatch") and "sd9" in unknown.message
    heavy = CascadeSpec.parse({
        "models": [{"name": "sd3.5-medium", "workerSpec": "m", "gpusPerReplica": 3},
                   {"name": "sd3.5-large", "workerSpec": "l", "gpusPerReplica": 3}],
        "sloSeconds": 10, "gpuBudget": {"max": 4}, "profile": {"configMapName": "p"},
    })  # fmt: skip
    checked = logic.plannable(heavy, l40s, "p")
    assert (checked.bundle, checked.reason) == (None, "BudgetTooSmall")
    assert "needs 6 GPUs" in checked.message and "gpuBudget.max is 4" in checked.message
    assert "BudgetTooSmall" in logic.STALLED_REASONS  # only a spec change clears it


def test_owned_objects_prune_a_removed_model_and_refuse_another_cascades_names(l40s):
    s = spec(["sd3.5-medium", "sd3.5-large"])
    checked = logic.plannable(s, l40s, "p")
    d = logic.decide(checked.bundle, s, 1.0, None)
    owned = builders.owned_objects(s, "e1", "ns", checked.bundle, d.plan, d.replicas)
    existing = {"Deployment": ["e1-sd3-5-medium", "e1-sd3-5-large", "e1-sdxl-lightning-2step", "e1-router"],
                "Service": ["e1-sdxl-lightning-2step", "e1-router"]}  # fmt: skip
    assert builders.prunable(existing, owned) == [
        ("Deployment", "e1-sdxl-lightning-2step"),
        ("Service", "e1-sdxl-lightning-2step"),
    ]
    # cascade "e1" with model "sd3.5-large" and cascade "e1-sd3" with "5-large" share a name
    taken = {("Deployment", "e1-sd3-5-large"): "e1-sd3", ("Service", "e1-router"): "e1"}
    assert builders.name_conflicts(taken, "e1", owned) == ["Deployment e1-sd3-5-large belongs to cascade e1-sd3"]


class _Prometheus(BaseHTTPRequestHandler):
    """A Prometheus HTTP API answer for the arrival-rate query (``answer``), after ``delay_s``."""

    answer: ClassVar[list] = []
    delay_s = 0.0

    def do_GET(self):
        time.sleep(self.delay_s)
        doc = {"status": "success", "data": {"resultType": "vector", "result": self.answer}}
        body = _json(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_):
        pass


def _json(x) -> str:
    import json

    return json.dumps(x)


def _serve(answer: list, delay_s: float = 0.0) -> tuple[str, ThreadingHTTPServer]:
    handler = type("H", (_Prometheus,), {"answer": answer, "delay_s": delay_s})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def test_no_series_is_no_data_and_one_name_in_two_namespaces_is_two_cascades():
    """Prometheus answering nothing for a cascade (a window shorter than two scrapes) is
    NoSeries, not 0 req/s; the rates are per namespace and cascade."""
    series = [
        {"metric": {"namespace": "team-a", "cascade": "e1"}, "value": [0, "6.5"]},
        {"metric": {"namespace": "team-b", "cascade": "e1"}, "value": [0, "0.25"]},
    ]
    url, server = _serve(series)
    try:
        assert prom.query_rate(url, "team-a", "e1", "1m", 5) == 6.5
        assert prom.query_rate(url, "team-b", "e1", "1m", 5) == 0.25
        with pytest.raises(prom.NoSeries, match="at least twice the scrape interval"):
            prom.query_rate(url, "team-c", "e1", "1m", 5)
        empty, server2 = _serve([])
        try:
            with pytest.raises(prom.NoSeries):
                prom.query_rate(empty, "team-a", "e1", "5s", 5)
        finally:
            server2.shutdown()
    finally:
        server.shutdown()
    assert "MetricsUnavailable" not in prom.metrics_failure(prom.NoSeries("x"), 5)  # the message is the reason's


def test_a_slow_prometheus_holds_up_no_other_cascades_read():
    """One cascade's Prometheus takes 3 s; another's answer must not wait for it (one global
    lock held across the HTTP call made it wait the whole time)."""
    slow, s1 = _serve([{"metric": {"namespace": "a", "cascade": "x"}, "value": [0, "1"]}], delay_s=3.0)
    fast, s2 = _serve([{"metric": {"namespace": "b", "cascade": "y"}, "value": [0, "2"]}])
    try:
        t = threading.Thread(target=prom.query_rate, args=(slow, "a", "x", "1m", 10))
        t.start()
        time.sleep(0.3)  # the slow read is under way
        t0 = time.monotonic()
        assert prom.query_rate(fast, "b", "y", "1m", 10) == 2.0
        fast_s = time.monotonic() - t0
        assert t.is_alive(), "the slow read should still be waiting for its answer"
        t.join()
    finally:
        s1.shutdown()
        s2.shutdown()
    print(f"the other cascade's read took {fast_s:.3f}s while a 3 s read was in flight")


def test_one_query_serves_concurrent_readers_of_the_same_prometheus():
    calls = []
    answers = prom.SharedAnswers(max_age_s=60)

    def fetch():
        calls.append(1)
        time.sleep(0.2)
        return {"k": 1}

    threads = [threading.Thread(target=answers.get, args=("key", fetch)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
