"""Defects that our own favourable set-up hid, each in the configuration users run: a cascade
that lists some of its profile's models, a 15-30 s scrape, one cascade name in two namespaces,
a dead Prometheus beside a live one, a budget the CRD alone cannot judge, a model removed."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hadis.core.bundle import parse_configmap
from hadis.local import running_prometheus
from hadis.operator import builders, logic, prom
from hadis.operator.spec import CascadeSpec
from hadis.router.metrics import RouterMetrics
from support import idle_router, wait_until

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


def test_a_subset_cascade_is_restricted_and_densified_once_per_profile_version(monkeypatch):
    """Each pass restricted the profile anew, and the dense table, cached by the bundle's
    identity, was computed again on every re-plan of a cascade listing a subset."""
    l40s = parse_configmap((ROOT / "profiles" / "configmap-l40s.yaml").read_text())  # a new version
    calls = []
    monkeypatch.setattr(logic, "planning_table", lambda table: calls.append(table) or table)
    s = spec(["sd3.5-medium", "sd3.5-large"])
    first = logic.plannable(s, l40s, "hadis-l40s").bundle
    for _ in range(3):
        again = logic.plannable(s, l40s, "hadis-l40s").bundle
        assert again is first
        logic.decide(again, s, 1.0, None)
    assert len(calls) == 1
    other = logic.plannable(spec(["sdxl-lightning-2step", "sd3.5-large-turbo"]), l40s, "hadis-l40s").bundle
    assert other is not first and set(other.profile.names) == {"sdxl-lightning-2step", "sd3.5-large-turbo"}


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
    owned = builders.owned_objects(s, "e1", "ns", checked.bundle, d.plan, d.replicas, builders.Images())
    mine = [("Deployment", n) for n in ("e1-sd3-5-medium", "e1-sd3-5-large", "e1-sdxl-lightning-2step", "e1-router")]
    mine += [("Service", "e1-sdxl-lightning-2step"), ("Service", "e1-router")]
    others = {("Deployment", "e2-sd3-5-medium"): "e2", ("Service", "e2-sdxl-lightning-2step"): "e2"}
    assert builders.prunable({**dict.fromkeys(mine, "e1"), **others}, "e1", owned) == [
        ("Deployment", "e1-sdxl-lightning-2step"),
        ("Service", "e1-sdxl-lightning-2step"),
    ]
    # cascade "e1" with model "sd3.5-large" and cascade "e1-sd3" with "5-large" share a name
    taken = {("Deployment", "e1-sd3-5-large"): "e1-sd3", ("Service", "e1-router"): "e1"}
    assert builders.name_conflicts(taken, "e1", owned) == ["Deployment e1-sd3-5-large belongs to cascade e1-sd3"]


@contextlib.contextmanager
def _routers(cascades: dict[str, str]) -> Iterator[dict[str, tuple[str, RouterMetrics]]]:
    """Idle routers (``support.idle_router``), one per namespace -> cascade: namespace ->
    (scrape address, metrics)."""
    with contextlib.ExitStack() as stack:
        yield {ns: stack.enter_context(idle_router(cascade)) for ns, cascade in cascades.items()}


def _until_series(url: str, namespace: str, cascade: str, window: str) -> float:
    """The rate once Prometheus has scraped twice within ``window`` (waits on the condition)."""
    end = time.monotonic() + 60
    while True:
        try:
            return prom.query_rate(url, namespace, cascade, window, 5)
        except prom.NoSeries:
            if time.monotonic() > end:
                raise
            time.sleep(0.5)


def test_no_series_is_no_data_and_one_name_in_two_namespaces_is_two_cascades(tmp_path):
    """A real Prometheus scraping two routers of a cascade named e1, in team-a and team-b, with
    the namespace label a ServiceMonitor adds. Requests reach team-a's only: its rate is
    positive and team-b's is 0, two cascades, not one sum. A window shorter than two scrapes, or
    a namespace with no router, answers no series: NoSeries, not 0 req/s."""
    with (
        _routers({"team-a": "e1", "team-b": "e1"}) as routers,
        running_prometheus(
            tmp_path / "prometheus", {addr: {"namespace": ns} for ns, (addr, _m) in routers.items()}, "1s"
        ) as url,
    ):
        busy = threading.Event()

        def arrive() -> None:  # team-a's requests, on whatever clock this machine keeps
            while not busy.is_set():
                routers["team-a"][1].requested_images.labels("e1").inc(2)  # n=2
                time.sleep(0.05)

        t = threading.Thread(target=arrive, daemon=True)
        t.start()
        try:
            _until_series(url, "team-b", "e1", "10s")
            end = time.monotonic() + 60  # team-a's counter seen to rise
            while (rate_a := _until_series(url, "team-a", "e1", "10s")) == 0 and time.monotonic() < end:
                time.sleep(0.5)
            assert rate_a > 0
            assert prom.query_rate(url, "team-b", "e1", "10s", 5) == 0.0  # a series, at zero
            with pytest.raises(prom.NoSeries, match="at least twice the scrape interval"):
                prom.query_rate(url, "team-c", "e1", "10s", 5)
            with pytest.raises(prom.NoSeries):  # one sample in a 1 s window at a 1 s scrape
                prom.query_rate(url, "team-a", "e1", "1s", 5)
        finally:
            busy.set()
            t.join(5)
    assert "MetricsUnavailable" not in prom.metrics_failure(prom.NoSeries("x"), 5)  # the message is the reason's


def test_a_step_up_in_arrivals_is_demand_within_a_scrape_and_a_stop_falls_at_the_windows_pace(tmp_path):
    """A real Prometheus (1 s scrape) and a 30 s window: after a quiet spell, about 20 images/s
    read as the rate between the last two scrapes, several times the window's mean a few seconds
    into the step (the demand the operator plans for was that mean: a ramp over the whole
    window). Once the window holds only the steady rate, the demand is its mean again, not the
    scrape-to-scrape noise of irate. Once they stop, the demand falls as the window's mean does,
    not to 0 at once."""
    demand = prom.ARRIVAL_RATES_QUERY.format(window="30s")
    mean = f"sum by (namespace, cascade) (rate({prom.DEMAND_SERIES}[30s]))"
    with (
        _routers({"team-a": "e1"}) as routers,
        running_prometheus(tmp_path / "prometheus", {routers["team-a"][0]: {"namespace": "team-a"}}, "1s") as url,
    ):

        def over_mean() -> float:  # both evaluated at one instant, by one query
            result = prom._query(url, f"({demand}) / ({mean})", 5)
            return float(result[0]["value"][1]) if result else 0.0

        counter = routers["team-a"][1].requested_images.labels("e1")
        _until_series(url, "team-a", "e1", "30s")
        busy = threading.Event()

        def arrive() -> None:  # about 20 images/s on whatever clock this machine keeps
            while not busy.is_set():
                counter.inc(1)
                time.sleep(0.05)

        t = threading.Thread(target=arrive, daemon=True)
        t.start()
        try:
            ratio = wait_until(lambda: (r := over_mean()) >= 3 and r, "demand several times the window's mean", 60,
                               every_s=0.2)  # fmt: skip
            assert ratio >= 3
            wait_until(lambda: over_mean() == pytest.approx(1.0), "the steady rate's demand its window's mean", 90,
                       every_s=0.5)  # fmt: skip
            steady = []
            for _ in range(8):  # irate is above the mean at about every other scrape: the larger read it so
                time.sleep(1.0)
                steady.append(over_mean())
            assert sum(r == pytest.approx(1.0) for r in steady) >= 7, steady  # one hiccup of this machine allowed
        finally:
            busy.set()
            t.join(5)
        # stopped: the last two scrapes see none, and the demand is the window's mean, still > 0
        fallen = wait_until(
            lambda: over_mean() == pytest.approx(1.0) and prom.query_rate(url, "team-a", "e1", "30s", 5),
            "the window's mean", 30, every_s=0.2,
        )  # fmt: skip
        assert fallen > 0


def test_images_held_at_the_routers_are_demand_on_top_of_the_arrivals(tmp_path):
    """The routers' queue depth (images held for a pod with room) is read per namespace and
    cascade from a real Prometheus: the operator plans to drain it within one SLO."""
    with (
        _routers({"team-a": "e1", "team-b": "e1"}) as routers,
        running_prometheus(
            tmp_path / "prometheus", {addr: {"namespace": ns} for ns, (addr, _m) in routers.items()}, "1s"
        ) as url,
    ):
        routers["team-a"][1].queue_depth.labels("e1", "light").set(12)
        routers["team-a"][1].queue_depth.labels("e1", "heavy").set(3)
        routers["team-b"][1].queue_depth.labels("e1", "light").set(0)
        end = time.monotonic() + 60
        while prom.query_backlog(url, "team-a", "e1") != 15 and time.monotonic() < end:
            time.sleep(0.5)
        assert prom.query_backlog(url, "team-a", "e1") == 15.0
        assert prom.query_backlog(url, "team-b", "e1") == 0.0
        assert prom.query_backlog(url, "team-c", "e1") == 0.0  # no router that holds: nothing held


@contextlib.contextmanager
def _unanswering() -> Iterator[str]:
    """A Prometheus URL whose server accepts connections and never answers (a hung Prometheus)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def test_a_hung_prometheus_holds_up_no_other_cascades_read(tmp_path):
    """One cascade's Prometheus never answers (its read times out after 3 s); another cascade's
    read of a live Prometheus must not wait for it (one global lock held across the HTTP call
    made it wait the whole time)."""
    with (
        _routers({"b": "y"}) as routers,
        running_prometheus(tmp_path / "prometheus", {routers["b"][0]: {"namespace": "b"}}, "1s") as live,
        _unanswering() as hung,
    ):
        _until_series(live, "b", "y", "10s")
        time.sleep(prom.RATES_MAX_AGE_S)  # that answer aged out: the read below asks Prometheus
        failed: list[BaseException] = []

        def read_hung() -> None:
            try:
                prom.query_rate(hung, "a", "x", "1m", 3)
            except Exception as e:  # the timeout
                failed.append(e)

        t = threading.Thread(target=read_hung)
        t.start()
        time.sleep(0.3)  # the hung read is under way
        t0 = time.monotonic()
        assert prom.query_rate(live, "b", "y", "10s", 10) == 0.0
        live_s = time.monotonic() - t0
        assert t.is_alive(), "the hung read should still be waiting for its answer"
        t.join()
        assert failed, "a read of a Prometheus that never answers must fail"
    print(f"the other cascade's read took {live_s:.3f}s while a hung read was in flight")


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


def test_a_url_pointed_elsewhere_is_refused_and_no_remote_answer_reaches_the_status():
    """SSRF: with a trailing '#' the API path became a fragment and the operator fetched the
    URL's own path (a cloud metadata server's credentials), then copied the first 200
    characters of the answer into the Degraded condition. Such URLs are refused, and whatever a
    server answers, the message says only its HTTP status or the error's type."""
    import http.server

    secret = "AKIA-THE-NODE-ROLE-SECRET"

    class Metadata(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # a metadata server: credentials for any path, 200 or 403
            body = f'{{"AccessKeyId": "{secret}"}}'.encode()
            self.send_response(403 if "api/v1" in self.path else 200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for url in (f"{base}/latest/meta-data/iam/security-credentials/node#", f"{base}/x?a=", "http://u:p@h:1"):
            with pytest.raises(prom.UnsafeUrl) as err:
                prom.query_rate(url, "ns", "e1", "1m", 5)
            assert secret not in prom.metrics_failure(err.value, 5)
        with pytest.raises(Exception) as err:  # a plain URL whose server answers 403 with the secret
            prom.query_rate(base, "ns", "e1", "1m", 5)
        said = prom.metrics_failure(err.value, 5)
        assert said == "Prometheus answered HTTP 403" and secret not in said
    finally:
        server.shutdown()


def test_a_prometheus_over_https_is_verified_and_trusted_through_a_ca_bundle(tmp_path, monkeypatch):
    """A real Prometheus serving https with a certificate of its own: refused (the condition says
    the certificate could not be verified) until the operator is given the CA, as the chart's
    prometheusCA does with REQUESTS_CA_BUNDLE; then read."""
    import subprocess

    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with (
        idle_router("e1") as (address, _metrics),
        running_prometheus(tmp_path / "prometheus", {address: {"namespace": "team-a"}}, "1s", tls=(cert, key)) as url,
    ):
        assert url.startswith("https://")
        with pytest.raises(Exception) as err:
            prom.query_rate(url, "team-a", "e1", "1m", 5)
        said = prom.metrics_failure(err.value, 5)
        assert said.startswith("Prometheus's TLS certificate could not be verified"), said
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        end = time.monotonic() + 60
        while True:  # the first scrapes land within seconds: until then the answer is NoSeries
            try:
                assert prom.query_rate(url, "team-a", "e1", "1m", 5) == 0.0
                break
            except prom.NoSeries:
                assert time.monotonic() < end, "no series after 60 s"
                time.sleep(1)
