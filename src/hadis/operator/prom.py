"""The operator's reads of Prometheus: each cascade's arrival rate and its workers' served figures.

Every cascade's figures come from one query per (Prometheus URL, window), shared for a moment:
100 cascades checking every 2 s cost Prometheus a query every second or so, not 50. A query is
single-flight per key: callers of the same key wait for the one answer, while a cascade that
reads another Prometheus (a dead one, say) holds up nobody else. No lock is held across I/O but
the key's own.

"No series" is not zero demand: a rate window shorter than two scrapes answers nothing, and so
does a router Prometheus does not scrape. ``query_rate`` then raises ``NoSeries``, which the
daemon reports as the MetricsUnavailable condition, keeping the last plan.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from hadis.operator import drift

# The query on the router's metrics; {window} filled in. Images, not requests: a request for n
# images is n images of work (the profile's capacities are per image). By namespace and cascade:
# the same cascade name in two namespaces is two cascades. ``namespace`` is the target label
# kube-prometheus-stack's monitors (and the chart's) put on every series.
DEMAND_SERIES = "hadis_router_requested_images_total"


def _summed(fn: str) -> str:
    return "sum by (namespace, cascade) (" + fn + "(" + DEMAND_SERIES + "[{window}]))"


# The rate between the last two scrapes (``irate``) where it is well above the window's mean
# (``STEP_OVER_MEAN`` times), else the mean: a step up shows within one scrape instead of as a
# ramp over the whole window (a 1m window at a 15 s scrape took 38 s to plan a 9 req/s step as
# 7), while a steady rate is its window's mean, not the scrape-to-scrape noise of irate (the
# larger of the two, read every check, ratcheted the planned rate up: an 8 req/s step was planned
# for 9.7 and flipped the split), and a fall shows at the window's pace, so one quiet scrape cuts
# no plan. Where the comparison drops a series, ``or`` fills in the mean (same labels).
STEP_OVER_MEAN = 1.25
ARRIVAL_RATES_QUERY = "(" + _summed("irate") + f" > {STEP_OVER_MEAN:g} * " + _summed("rate") + ") or " + _summed("rate")
# Images the routers hold for a pod with room (``hadis.router.holding``), by cascade: a backlog
# the plan must drain on top of the arrivals.
BACKLOG_SERIES = "hadis_router_queue_depth_images"
BACKLOG_QUERY = "sum by (namespace, cascade) (" + BACKLOG_SERIES + ")"
RATES_MAX_AGE_S = 0.9  # below the shortest check period (1 s)
SERVED_MAX_AGE_S = 5.0  # served figures move slowly (a window of minutes): one answer serves all cascades


class NoSeries(LookupError):
    """Prometheus answered, but with no series for the cascade."""


class UnsafeUrl(ValueError):
    """A Prometheus URL the operator will not query (the CRD refuses it too)."""


_URL = re.compile(r"https?://[^/?#@\s]+(/[^?#@\s]*)?")


def checked_url(url: str) -> str:
    """``url`` if it is a plain http(s) base URL; UnsafeUrl otherwise. A query, a fragment or
    credentials would change where the API path the client appends is sent."""
    if not _URL.fullmatch(url):
        raise UnsafeUrl(
            f"spec.prometheus.url {url[:100]!r} is not a plain http(s) base URL (no query, fragment or credentials)"
        )
    return url


class SharedAnswers:
    """Answers per key, fetched by one caller at a time per key and reused for ``max_age_s``."""

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._answers: dict[Any, tuple[float, Any]] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._guard = threading.Lock()  # held only to find a key's lock, never across I/O

    def fresh(self, key: Any) -> Any | None:
        """The key's answer if fresh enough, else None (no I/O: safe on the event loop)."""
        hit = self._answers.get(key)
        if hit is None or time.monotonic() - hit[0] > self.max_age_s:
            return None
        return hit[1]

    def get(self, key: Any, fetch: Callable[[], Any]) -> Any:
        """The key's fresh answer, or ``fetch()``'s; concurrent callers of one key fetch once."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            answer = self.fresh(key)
            if answer is None:
                answer = fetch()
                self._answers[key] = (time.monotonic(), answer)
        return answer


_RATES = SharedAnswers(RATES_MAX_AGE_S)
_SERVED = SharedAnswers(SERVED_MAX_AGE_S)


@functools.lru_cache(maxsize=64)
def client(url: str) -> Any:
    """One client (and HTTP session) per Prometheus URL. A refused connection is tried once
    more; a timeout is not (the next check asks again), so a slow Prometheus costs one timeout."""
    from prometheus_api_client import PrometheusConnect
    from urllib3.util.retry import Retry

    # TLS verified (the system's CAs, or REQUESTS_CA_BUNDLE's file: the chart's prometheusCA mounts one)
    return PrometheusConnect(
        url=checked_url(url), disable_ssl=False, retry=Retry(total=1, read=False, backoff_factor=0.2)
    )


def _query(url: str, query: str, timeout_s: float) -> list[dict]:
    return client(url).custom_query(query, params={"timeout": f"{timeout_s:g}s"}, timeout=timeout_s)


def _rates(result: Sequence[dict]) -> dict[tuple[str, str], float]:
    return {(r["metric"].get("namespace", ""), r["metric"].get("cascade", "")): float(r["value"][1]) for r in result}


def rate_of(rates: dict[tuple[str, str], float], namespace: str, cascade: str, window: str) -> float:
    """The cascade's rate in a shared answer; NoSeries when it has none."""
    try:
        return rates[(namespace, cascade)]
    except KeyError:
        raise NoSeries(
            f"no series of {DEMAND_SERIES} for {namespace}/{cascade} over {window}: the "
            "routers are not scraped, or the window holds fewer than two scrapes (it must be at least "
            "twice the scrape interval; kube-prometheus-stack scrapes every 30s)"
        ) from None


def cached_rate(url: str, namespace: str, cascade: str, window: str) -> float | None:
    """The cascade's rate from a fresh shared answer, None when there is none (no I/O)."""
    rates = _RATES.fresh((url, window))
    return None if rates is None else rate_of(rates, namespace, cascade, window)


def query_rate(url: str, namespace: str, cascade: str, window: str, timeout_s: float = 5.0) -> float:
    """The cascade's demand (images/s) over ``window``; NoSeries when Prometheus has none."""
    query = ARRIVAL_RATES_QUERY.format(window=window)
    rates = _RATES.get((url, window), lambda: _rates(_query(url, query, timeout_s)))
    return rate_of(rates, namespace, cascade, window)


def query_backlog(url: str, namespace: str, cascade: str, timeout_s: float = 5.0) -> float:
    """Images the cascade's routers hold now (0 with no series: routers that do not hold)."""
    backlog = _RATES.get((url, "backlog"), lambda: _rates(_query(url, BACKLOG_QUERY, timeout_s)))
    return backlog.get((namespace, cascade), 0.0)


def _served_series(url: str, window: str, timeout_s: float) -> dict[str, dict[tuple[str, str, str], float]]:
    series = {}
    for key, query in drift.queries(window).items():
        series[key] = {
            (r["metric"].get("namespace", ""), r["metric"].get("pod", ""), r["metric"].get("model", "")):
            float(r["value"][1]) for r in _query(url, query, timeout_s)
        }  # fmt: skip
    return series


def query_served(
    url: str, namespace: str, deployments: Sequence[str], window: str, timeout_s: float
) -> dict[str, drift.Served]:
    """What a cascade's worker Deployments served over ``window``, by Triton model."""
    series = _SERVED.get((url, window), lambda: _served_series(url, window, timeout_s))
    return drift.served_of(drift.cascade_totals(series, namespace, deployments))


def metrics_failure(e: Exception, timeout_s: float) -> str:
    """What went wrong reading the demand, in the words of the MetricsUnavailable condition.

    Never the answer's body: a status is readable by whoever may read the cascade, and a URL
    pointed elsewhere (a metadata server) would copy what it answers there. An HTTP error is
    its status code; anything else its type."""
    import requests

    if isinstance(e, NoSeries | UnsafeUrl):
        return str(e)
    if isinstance(e, requests.Timeout):
        return f"Prometheus did not answer within {timeout_s:g}s"
    if isinstance(e, requests.exceptions.SSLError):
        return "Prometheus's TLS certificate could not be verified: give the operator its CA (the chart's prometheusCA)"
    if isinstance(e, requests.ConnectionError):
        return f"Prometheus unreachable ({type(e).__name__})"
    status = re.match(r"HTTP Status Code (\d{3})", str(e))
    if status:
        return f"Prometheus answered HTTP {status.group(1)}"
    return f"Prometheus query failed ({type(e).__name__})"
