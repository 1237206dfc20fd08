"""The router's Prometheus metrics (the names the operator queries; see DESIGN.md).

All are labelled by ``cascade``; a private registry keeps tests independent. Images, not
requests, are the unit of routing: a request for ``n`` images makes ``n`` decisions.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Image generation takes seconds; the client's default buckets stop at 10 s.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        self.arrivals = Counter("hadis_router_arrivals", "Image generation requests received.", ["cascade"], registry=r)
        # The demand the operator plans for: a request for n images is n images of work.
        self.requested_images = Counter(
            "hadis_router_requested_images",
            "Images asked for by valid generation requests (n per request): the demand the operator plans for.",
            ["cascade"],
            registry=r,
        )
        self.decisions = Counter(
            "hadis_router_routing_decisions",
            "Images by routing outcome: light (served by the light model), direct_heavy (the router "
            "sent the prompt straight to heavy), overflow (light was due but full and heavy had room), "
            "escalated (a light result the discriminator sent on), "
            "heavy_fallback (light was due but no light worker answered).",
            ["cascade", "decision"],
            registry=r,
        )
        self.latency = Histogram(
            "hadis_router_request_duration_seconds",
            "End-to-end latency of answered generation requests.",
            ["cascade"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.slo_violations = Counter(
            "hadis_router_slo_violations", "Answered requests that took longer than the SLO.", ["cascade"], registry=r
        )
        self.rejected = Counter(
            "hadis_router_rejected_requests",
            "Requests refused: unauthorized (no valid API key, 401), quota (a key over its quota, 429), "
            "invalid (other 4xx), overload (shed early, 503), unavailable (no worker answered), "
            "internal (a fault in the router, 500: its log has the traceback).",
            ["cascade", "reason"],
            registry=r,
        )
        self.degraded = Counter(
            "hadis_router_degraded_images",
            "Images served by the light model although heavy was wanted (heavy_unavailable, heavy_saturated).",
            ["cascade", "reason"],
            registry=r,
        )
        self.in_flight = Gauge(
            "hadis_router_in_flight_requests", "Generation requests being processed.", ["cascade"], registry=r
        )
        self.images = Counter("hadis_router_images", "Images served, by model.", ["cascade", "model"], registry=r)
        self.worker_errors = Counter(
            "hadis_router_worker_errors", "Failed calls to a tier's workers.", ["cascade", "model"], registry=r
        )
        self.bad_answers = Counter(
            "hadis_router_worker_bad_answers",
            "Worker answers that were no image (a malformed body); the next replica is tried.",
            ["cascade", "model"],
            registry=r,
        )
        self.key_requests = Counter(
            "hadis_router_api_key_requests",
            "Generation requests with a valid API key, by the key's name (its file in the keys' Secret).",
            ["cascade", "key"],
            registry=r,
        )
        self._plan_series(r)

    def _plan_series(self, r: CollectorRegistry) -> None:
        """The series of the configuration in force and the tiers' dispatch and load."""
        self.config_reloads = Counter(
            "hadis_router_config_reloads",
            "Configuration reloads by result (ok, error).",
            ["cascade", "result"],
            registry=r,
        )
        self.ratio = Gauge(
            "hadis_router_configured_ratio",
            "The shares in force: kind=router (straight to heavy) or kind=disc (escalated).",
            ["cascade", "kind"],
            registry=r,
        )
        self.routers = Gauge(
            "hadis_router_replicas",
            "Router replicas sharing the tiers, as this router counts them (each admits 1/N).",
            ["cascade"],
            registry=r,
        )
        self.dispatch_endpoints = Gauge(
            "hadis_router_dispatch_endpoints",
            "Endpoints a tier's images are sent to, by source: endpointslices (its ready pods, "
            "least loaded first) or service (the tier's Service).",
            ["cascade", "model", "source"],
            registry=r,
        )
        self.tier_capacity = Gauge(
            "hadis_router_tier_capacity_images_per_second",
            "Images per second this router admits against, per tier: its share of the tier, learned "
            "from completions (source=learned) or the planning profile's (source=profile).",
            ["cascade", "model", "source"],
            registry=r,
        )
        self.tier_predicted = Gauge(
            "hadis_router_tier_predicted_seconds",
            "Admission's predicted latency of one more image at the tier, now.",
            ["cascade", "model"],
            registry=r,
        )
        self.tier_in_flight = Gauge(
            "hadis_router_tier_in_flight_images",
            "Images this router has in flight at the tier.",
            ["cascade", "model"],
            registry=r,
        )
        self.cold_starts = Counter(
            "hadis_router_cold_starts",
            "Wakes asked of the operator: a request found a scale-to-zero cascade's tier with no pod.",
            ["cascade"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "hadis_router_queue_depth_images",
            "Images this router holds for the tier, waiting for a pod with room (holding).",
            ["cascade", "model"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "hadis_router_queue_wait_seconds",
            "Time an image waited for a pod with room before it was sent to one.",
            ["cascade", "model"],
            buckets=(0.005, 0.05, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )

    def expose(self, cascade: str, models: tuple[str, ...]) -> None:
        """Create every series of a cascade at zero, so a rate or a share over them is 0 (not an
        empty answer) before the first escalation, shed or violation: dashboards and alerts
        then read "none" rather than "no data"."""
        c = cascade
        self.arrivals.labels(c)
        self.requested_images.labels(c)
        self.slo_violations.labels(c)
        self.latency.labels(c)
        self.cold_starts.labels(c)
        for decision in ("light", "direct_heavy", "overflow", "escalated", "heavy_fallback"):
            self.decisions.labels(c, decision)
        for reason in ("unauthorized", "quota", "invalid", "overload", "unavailable", "internal"):
            self.rejected.labels(c, reason)
        for reason in ("heavy_unavailable", "heavy_saturated"):
            self.degraded.labels(c, reason)
        for model in models:
            self.images.labels(c, model)
            self.worker_errors.labels(c, model)
            self.bad_answers.labels(c, model)
            self.queue_wait.labels(c, model)
