"""The router: an OpenAI-compatible image API in front of a light and a heavy Triton tier.

HTTP stack: aiohttp. tritonclient's asyncio client is built on aiohttp, so one library and one
event loop serve both the ingress and the worker calls; it is a mature server with request
size limits and no extra ASGI layer to run.

Per request: validate, score the prompt, take its percentile among recent prompts, route it
light or straight to heavy, admit it only if the tier can finish within the SLO (else 503 with
Retry-After), call the workers, escalate a light image whose confidence is in the bottom
``discRatio``, and answer with which model served each image and whether it was escalated or
degraded. Policy when the heavy tier is down or saturated: the light image is served, flagged
``degraded``; when the light tier is down, heavy serves what it can in time (``heavy_fallback``);
when both are down, 503.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, ProcessCollector, generate_latest

from hadis import __version__
from hadis.contract import model_ready_path
from hadis.core.errors import DataError
from hadis.core.routing import after_light, entry_tier, routes_to_heavy
from hadis.core.streaming import StreamingPercentile
from hadis.router.admission import Admission, TierLoad, admit
from hadis.router.api import ApiError, GenerationRequest, openapi_document, parse_generation_request
from hadis.router.auth import KeySet, Quotas, bearer_token, read_keys
from hadis.router.config import Auth, Discovery, Limits, RouterConfig, Tier, parse_config
from hadis.router.discovery import SliceWatch
from hadis.router.dispatch import EndpointPool, ready_addresses, ready_count
from hadis.router.holding import PodQueue, expected_capacity
from hadis.router.metrics import RouterMetrics
from hadis.router.triton import TierClient, WorkerResult, WorkerUnavailable
from hadis.router.wake import Waker

HARD_BODY_LIMIT = 16 * 1024 * 1024
RELOAD_INTERVAL_S = 1.0
PROBE_INTERVAL_S = 2.0


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": round(record.created, 3), "level": record.levelname.lower(), "msg": record.getMessage()}
        doc.update(getattr(record, "fields", {}))
        return json.dumps(doc)


log = logging.getLogger("hadis.router")


def _log(level: int, msg: str, **fields) -> None:
    log.log(level, msg, extra={"fields": fields})


@dataclass
class ImageOutcome:
    result: WorkerResult
    model: str
    escalated: bool = False
    degraded: str | None = None


@dataclass(frozen=True)
class Routed:
    entry: str  # hadis.core.routing.entry_tier's answer: light, heavy, degrade or overflow
    score: float
    percentile: float


def _unit(text: str, salt: int = 0) -> float:
    """A stable number in [0, 1) per prompt: splits ties at a percentile cut reproducibly."""
    return zlib.crc32(text.encode("utf-8", errors="replace"), salt) / 2**32


def _stamp(path: Path) -> tuple[float, int] | None:
    try:
        st = path.stat()  # follows the symlinks a mounted ConfigMap swaps
    except OSError:
        return None
    return (st.st_mtime, st.st_size)


def _dir_stamp(directory: Path) -> tuple | None:
    """What changes when a mounted Secret's files do (their names, times and sizes)."""
    try:
        return tuple(sorted((p.name, _stamp(p)) for p in directory.iterdir() if not p.name.startswith(".")))
    except OSError:
        return None


def _make_scorer(cfg: RouterConfig):
    from hadis.scoring.model import load_scorer

    return load_scorer(cfg.scoring.mode, cfg.scoring.model_file)


TIERS = ("light", "heavy")


@dataclass(frozen=True)
class Plane:
    """Everything one configuration decides, built once per config and swapped whole.

    A request takes the plane that is current when it arrives and uses it to the end: its
    escalation calls the heavy model of that config and labels the image with it. State tied to a
    model (its load, its confidence percentiles) carries into the next plane only while the model
    stays; a new model pair starts afresh."""

    cfg: RouterConfig
    scorer: Any
    score_pct: StreamingPercentile
    conf_pct: StreamingPercentile
    clients: Mapping[str, TierClient]
    loads: Mapping[str, TierLoad]

    def tier(self, name: str) -> Tier:
        return getattr(self.cfg, name)


def _pool_key(tier: Tier) -> tuple:
    return (tier.discovery,) if tier.discovery else ("endpoints", tier.endpoints)


def build_plane(
    cfg: RouterConfig,
    old: Plane | None,
    queues: Mapping[tuple, PodQueue],
    rescore: bool = False,
    on_bad_answer: Callable[[str], None] | None = None,
) -> Plane:
    """The plane of ``cfg``, keeping from ``old`` what still describes the same models
    (``rescore``: the router model file changed, so the scorer and its percentiles are new).
    ``on_bad_answer`` counts a worker's malformed answer (its model's name)."""
    if old is not None and old.cfg.scoring == cfg.scoring and not rescore:
        scorer, score_pct = old.scorer, old.score_pct
    else:
        scorer = _make_scorer(cfg)
        score_pct = StreamingPercentile(cfg.scoring.window, scorer.score_quantiles)
    clients: dict[str, TierClient] = {}
    loads: dict[str, TierLoad] = {}
    for name in TIERS:
        tier: Tier = getattr(cfg, name)
        was: Tier | None = None if old is None else old.tier(name)
        same_model = was is not None and was.name == tier.name
        if same_model and replace(was, capacity=None) == replace(tier, capacity=None):
            clients[name] = old.clients[name]  # capacity is the planner's figure, not the client's
        else:
            clients[name] = TierClient(tier, queues[_pool_key(tier)], on_bad_answer)
        loads[name] = old.loads[name] if same_model else TierLoad()
    same_light = old is not None and old.cfg.light.name == cfg.light.name
    conf_pct = old.conf_pct if same_light else StreamingPercentile(cfg.scoring.window)
    return Plane(cfg, scorer, score_pct, conf_pct, clients, loads)


class Router:
    def __init__(self, config_path: str | Path, metrics: RouterMetrics | None = None):
        self.config_path = Path(config_path)
        self.metrics = metrics or RouterMetrics()
        cfg = self._read_config()
        self._stamp = self._file_stamp()
        self.pools: dict[tuple, EndpointPool] = {}
        self.queues: dict[tuple, PodQueue] = {}  # one per pool: its images waiting for a pod
        self.watches: dict[tuple, SliceWatch] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # set on start: watches need it
        self.peers: int | None = None  # ready router replicas, when their Service is watched
        self._ensure_pools(cfg)
        self.plane = build_plane(cfg, None, self.queues, on_bad_answer=self._bad_answer)
        self._model = self._model_stamp(cfg)
        self.ready_endpoints: dict[str, set[str]] = {"light": set(), "heavy": set()}
        self._tasks: list[asyncio.Task] = []
        self.keys: KeySet | None = None  # the API keys, when the config asks for them
        self._keys_stamp: tuple | None = None
        self._quotas: Quotas | None = None
        self.waker = Waker()  # scale to zero: asks the operator for workers
        self._reload_keys(cfg.auth)
        self._published()

    @property
    def cfg(self) -> RouterConfig:
        return self.plane.cfg

    def _bad_answer(self, model: str) -> None:
        self.metrics.bad_answers.labels(self.cfg.cascade, model).inc()

    # ------------------------------------------------------------------ configuration
    def _read_config(self) -> RouterConfig:
        try:
            text = self.config_path.read_text(encoding="utf-8")
        except OSError as e:
            raise DataError(str(self.config_path), f"cannot read: {e.strerror}") from None
        return parse_config(text, str(self.config_path))

    def _file_stamp(self) -> tuple[float, int] | None:
        return _stamp(self.config_path)

    def _model_stamp(self, cfg: RouterConfig) -> tuple[float, int] | None:
        return _stamp(Path(cfg.scoring.model_file)) if cfg.scoring.model_file else None

    def _ensure_pools(self, cfg: RouterConfig) -> None:
        """An endpoint pool per tier Service, and once the loop runs, the watches ``cfg`` names."""
        for name in TIERS:
            tier: Tier = getattr(cfg, name)
            key = _pool_key(tier)
            if key not in self.pools:
                self.pools[key] = EndpointPool(tier.endpoints)
                self.queues[key] = PodQueue(self.pools[key])
            if tier.discovery and key not in self.watches and self._loop is not None:
                self._watch(key, tier.discovery)
        peers = cfg.routers.discovery
        if peers and ("peers", peers) not in self.watches and self._loop is not None:
            self._watch(("peers", peers), peers)

    def _watch(self, key: tuple, d: Discovery) -> None:
        def changed(slices: list | None) -> None:
            if key[0] == "peers":
                self.peers = None if slices is None else ready_count(slices)
                self._published()
            else:
                self.endpoints_changed(key, None if slices is None else ready_addresses(slices, d.port))

        watch = self.watches[key] = SliceWatch(d.namespace, d.service, changed)
        assert self._loop is not None
        watch.start(self._loop)

    def endpoints_changed(self, key: tuple, ready: tuple[str, ...] | None) -> None:
        """A tier Service's ready pods, as its EndpointSlice watch reports them (None: unknown)."""
        self.pools[key].update(ready)
        self._published()

    def tier_key(self, tier: str) -> tuple:
        """The key of ``tier``'s endpoint pool and queue in the current plane."""
        return _pool_key(self.plane.tier(tier))

    def _published(self) -> None:
        """Derived figures after a change: admission's priors and shares, and the gauges."""
        plane = self.plane
        c = plane.cfg.cascade
        routers = self.peers or plane.cfg.routers.replicas
        self.metrics.expose(c, tuple(plane.tier(name).name for name in TIERS))
        self.metrics.ratio.labels(c, "router").set(plane.cfg.router_ratio)
        self.metrics.ratio.labels(c, "disc").set(plane.cfg.disc_ratio)
        self.metrics.routers.labels(c).set(routers)
        for name in TIERS:
            tier, load, pool = plane.tier(name), plane.loads[name], plane.clients[name].pool
            load.share = 1.0 / max(1, routers)
            cap, hold = tier.capacity, plane.cfg.limits.hold
            if cap is not None:
                replicas = cap.replicas if pool.discovered is None else len(pool.discovered)
                load.prior_base_s = cap.base_s
                load.prior_capacity = cap.per_replica * replicas
            queue = self.queues[_pool_key(tier)]
            queue.hold, queue.cold = hold, plane.cfg.cold_start is not None
            pool.plan(cap.replicas if cap else 0, cap.slots if cap and hold else None, time.monotonic())
            self.metrics.dispatch_endpoints.labels(c, tier.name, pool.source).set(len(pool.candidates()))
            other = "service" if pool.source == "endpointslices" else "endpointslices"
            self.metrics.dispatch_endpoints.labels(c, tier.name, other).set(0)

    def _reload_keys(self, auth: Auth | None) -> None:
        """Read the API keys again when their directory changed (a Secret's update reaches a
        mounted volume within the kubelet's sync period): keys are added and revoked live."""
        if auth is None:
            self.keys, self._keys_stamp = None, None
            return
        directory = Path(auth.api_keys_dir)
        stamp = (directory, _dir_stamp(directory))
        if self.keys is not None and stamp == self._keys_stamp:
            return
        self._keys_stamp = stamp
        try:
            keys = read_keys(directory)
        except OSError as e:
            keys = KeySet({}, (f"{directory} ({e.strerror})",))
        for why in keys.ignored:
            _log(logging.ERROR, "API key ignored", key=why)
        if not keys.by_digest:
            _log(
                logging.ERROR, "no usable API key: every generation request is refused (401)", directory=str(directory)
            )
        self.keys = keys
        _log(logging.INFO, "API keys loaded", keys=sorted(keys.by_digest.values()))

    def _authorize(self, request: web.Request, cfg: RouterConfig) -> None:
        """With ``auth`` configured: a known key (else 401, as OpenAI answers) within its quota
        (else 429 with Retry-After). Checked before the body is read."""
        auth = cfg.auth
        if auth is None:
            return
        token = bearer_token(request.headers.get("Authorization"))
        name = None if token is None or self.keys is None else self.keys.name_of(token)
        if name is None:
            why = "no API key given" if token is None else "the API key is not valid"
            raise ApiError(
                401,
                f"{why}: send 'Authorization: Bearer <key>' with a key of this cascade",
                code="invalid_api_key",
                extra_headers={"WWW-Authenticate": 'Bearer realm="hadis"'},
                reason="unauthorized",
            )
        if auth.requests_per_minute is not None:
            q = self._quotas
            if q is None or (q.requests_per_minute, q.burst) != (auth.requests_per_minute, auth.burst):
                q = self._quotas = Quotas(auth.requests_per_minute, auth.burst)
            wait = q.retry_after(name, time.monotonic(), self.peers or cfg.routers.replicas)
            if wait > 0:
                raise ApiError(
                    429,
                    f"API key {name!r} is over its quota of {auth.requests_per_minute:g} requests per minute; "
                    f"retry after {wait:.1f}s",
                    type_="requests",
                    code="rate_limit_exceeded",
                    retry_after_s=wait,
                    reason="quota",
                )
        self.metrics.key_requests.labels(cfg.cascade, name).inc()

    async def reload_if_changed(self) -> bool:
        """Swap in a changed config file or router model file; a bad one is logged and the old
        plane kept. Requests in flight keep the plane (config, worker clients, loads) they
        started with."""
        stamp = self._file_stamp()
        model = self._model_stamp(self.cfg)
        if stamp is None or (stamp == self._stamp and model == self._model):
            return False
        self._stamp = stamp
        old = self.plane
        try:
            new_cfg = self._read_config()
            self._ensure_pools(new_cfg)
            model = self._model_stamp(new_cfg)
            rescore = new_cfg.scoring.model_file is not None and model != self._model
            self._model = model
            new = build_plane(new_cfg, old, self.queues, rescore, self._bad_answer)
        except DataError as e:
            self.metrics.config_reloads.labels(old.cfg.cascade, "error").inc()
            _log(logging.ERROR, "config reload failed; keeping the previous config", error=str(e))
            return False
        self.plane = new
        self._retire(old, new)
        self._published()
        self.metrics.config_reloads.labels(new_cfg.cascade, "ok").inc()
        _log(
            logging.INFO,
            "config reloaded",
            scorer=new_cfg.scoring.mode + (" (new model file)" if rescore else ""),
            router_ratio=new_cfg.router_ratio,
            disc_ratio=new_cfg.disc_ratio,
            light=new_cfg.light.name,
            heavy=new_cfg.heavy.name,
        )
        return True

    def _retire(self, old: Plane, new: Plane) -> None:
        """Close what only the old plane used once its requests are done (within 2 SLOs)."""
        live = {id(c) for c in new.clients.values()}
        stale = [c for c in old.clients.values() if id(c) not in live]
        keys = {_pool_key(new.tier(n)) for n in TIERS}
        dead = [k for k in self.watches if k[0] != "peers" and k not in keys]
        if new.cfg.routers.discovery != old.cfg.routers.discovery and old.cfg.routers.discovery:
            dead.append(("peers", old.cfg.routers.discovery))
            self.peers = None

        async def close() -> None:
            for c in stale:
                await c.close()
            for k in dead:
                if k in self.watches and k not in {_pool_key(self.plane.tier(n)) for n in TIERS}:
                    self.watches.pop(k).stop()
                    self.pools.pop(k, None)
                    self.queues.pop(k, None)

        if stale or dead:
            asyncio.get_running_loop().call_later(old.cfg.slo_s * 2, lambda: asyncio.ensure_future(close()))

    # ------------------------------------------------------------------ background tasks
    async def _watch_config(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_INTERVAL_S)
            try:
                await self.reload_if_changed()
                self._reload_keys(self.cfg.auth)
            except Exception as e:  # never let the watcher die
                _log(logging.ERROR, "config watcher error", error=repr(e))

    async def _probe_workers(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
            while True:
                for name in TIERS:
                    ready = set()
                    tier: Tier = self.plane.tier(name)
                    for ep in tier.endpoints:
                        try:
                            async with session.get(f"http://{ep}{model_ready_path(tier.name)}") as r:
                                if r.status == 200:
                                    ready.add(ep)
                        except (aiohttp.ClientError, OSError, TimeoutError):
                            pass
                    self.ready_endpoints[name] = ready
                await asyncio.sleep(PROBE_INTERVAL_S)

    async def start(self, _app: web.Application | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._ensure_pools(self.plane.cfg)
        self._tasks = [asyncio.create_task(self._watch_config()), asyncio.create_task(self._probe_workers())]

    async def stop(self, _app: web.Application | None = None) -> None:
        for t in self._tasks:
            t.cancel()
        for w in self.watches.values():
            w.stop()
        for client in {id(c): c for c in self.plane.clients.values()}.values():
            await client.close()

    # ------------------------------------------------------------------ one image
    async def _call(self, plane: Plane, tier: str, prompt: str, seed: int, deadline: float) -> WorkerResult:
        load = plane.loads[tier]
        ahead = load.start()
        bind_by = deadline - (load.effective()[0] or 0.0)  # later, the image cannot be done in time
        client = plane.clients[tier]
        rate, at = expected_capacity(client.pool, plane.tier(tier).capacity, time.monotonic())
        client.queue.expected_at = at if rate else None
        try:
            result = await plane.clients[tier].generate(prompt, seed, deadline, bind_by)
        except WorkerUnavailable:
            load.abandon()
            self.metrics.worker_errors.labels(plane.cfg.cascade, plane.tier(tier).name).inc()
            raise
        except BaseException:
            load.abandon()
            raise
        load.finish(result.latency_s, time.monotonic(), ahead)
        self.metrics.queue_wait.labels(plane.cfg.cascade, plane.tier(tier).name).observe(result.queued_s)
        return result

    def _light(self, plane: Plane, res: WorkerResult, degraded: str | None = None) -> ImageOutcome:
        """The light image is the answer; ``degraded`` says why heavy was not used, if it was due."""
        self.metrics.decisions.labels(plane.cfg.cascade, "light").inc()
        if degraded:
            self.metrics.degraded.labels(plane.cfg.cascade, degraded).inc()
        return ImageOutcome(res, plane.cfg.light.name, degraded=degraded)

    async def _image(self, plane: Plane, entry: str, prompt: str, seed: int, deadline: float) -> ImageOutcome:
        """One image from the tier ``entry`` names (``hadis.core.routing.entry_tier``)."""
        cfg = plane.cfg
        if entry == "degrade":  # heavy was saturated at admission: light, never escalated
            return self._light(plane, await self._call(plane, "light", prompt, seed, deadline), "heavy_saturated")
        if entry in ("heavy", "overflow"):  # overflow: light was full, heavy had room
            try:
                res = await self._call(plane, "heavy", prompt, seed, deadline)
                self.metrics.decisions.labels(cfg.cascade, "direct_heavy" if entry == "heavy" else "overflow").inc()
                return ImageOutcome(res, cfg.heavy.name)
            except WorkerUnavailable:
                if deadline - time.monotonic() <= 0:
                    raise
                light = await self._call(plane, "light", prompt, seed, deadline)
                return self._light(plane, light, "heavy_unavailable")
        try:
            res = await self._call(plane, "light", prompt, seed, deadline)
        except WorkerUnavailable:  # no light pod answers (one replica, rolling out): heavy can
            remaining = deadline - time.monotonic()
            if not self._admit(plane, "heavy", 1, remaining).admitted:
                raise  # heavy cannot finish it in time either: say so now, not at the deadline
            heavy = await self._call(plane, "heavy", prompt, seed, deadline)
            self.metrics.decisions.labels(cfg.cascade, "heavy_fallback").inc()
            return ImageOutcome(heavy, cfg.heavy.name)
        if res.confidence is None or cfg.disc_ratio <= 0:
            return self._light(plane, res)
        pct = plane.conf_pct.percentile_and_observe(res.confidence, _unit(prompt, seed & 0xFFFFFFFF))
        remaining = deadline - time.monotonic()
        heavy_adm = self._admit(plane, "heavy", 1, remaining)
        outcome = after_light(pct, cfg.disc_ratio, heavy_adm.admitted)
        if outcome != "escalate":
            return self._light(plane, res, "heavy_saturated" if outcome == "degrade" else None)
        try:
            heavy = await self._call(plane, "heavy", prompt, seed, deadline)
        except WorkerUnavailable:
            return self._light(plane, res, "heavy_unavailable")
        self.metrics.decisions.labels(cfg.cascade, "escalated").inc()
        return ImageOutcome(heavy, cfg.heavy.name, escalated=True)

    def _admit(self, plane: Plane, tier: str, n: int, within_s: float) -> Admission:
        """Admission to ``tier``; holding counts the pods the plan is bringing up."""
        load, cfg = plane.loads[tier], plane.cfg
        if not cfg.limits.hold:
            return admit(load, n, within_s, cfg.limits.max_in_flight)
        now = time.monotonic()
        pool = plane.clients[tier].pool
        load.coming_capacity, load.coming_at = expected_capacity(pool, plane.tier(tier).capacity, now)
        adm = admit(load, n, within_s, cfg.limits.max_in_flight, now)
        if not adm.admitted and not pool.candidates():
            # No pod now, and those coming are too late: admitted as before holding, the image
            # finds no pod at once and fails over to the other tier (a one-pod tier's rollout)
            return admit(load, n, within_s, cfg.limits.max_in_flight)
        return adm

    # ------------------------------------------------------------------ one request, in steps
    async def _read_request(self, request: web.Request, cfg: RouterConfig) -> GenerationRequest:
        return parse_generation_request(await read_body(request, cfg.limits), cfg)

    def _route(self, plane: Plane, req: GenerationRequest) -> Routed:
        """Score the prompt, pick its entry tier, and admit it there, or shed it with a 503."""
        cfg = plane.cfg
        score = plane.scorer.score(req.prompt)
        pct = plane.score_pct.percentile_and_observe(score, _unit(req.prompt))
        heavy_adm = light_adm = None
        if routes_to_heavy(pct, cfg.router_ratio):
            heavy_adm = self._admit(plane, "heavy", req.n, cfg.slo_s)
        if heavy_adm is None or not heavy_adm.admitted:
            light_adm = self._admit(plane, "light", req.n, cfg.slo_s)
        if heavy_adm is None and not light_adm.admitted:  # light is full: heavy may have room
            heavy_adm = self._admit(plane, "heavy", req.n, cfg.slo_s)
        entry = entry_tier(
            pct,
            cfg.router_ratio,
            heavy_in_time=heavy_adm is not None and heavy_adm.admitted,
            light_in_time=light_adm is not None and light_adm.admitted,
        )
        if entry == "shed":
            adm = light_adm or heavy_adm
            assert adm is not None
            self.metrics.rejected.labels(cfg.cascade, "overload").inc()
            raise ApiError(
                503,
                f"overloaded: {adm.reason} (predicted {adm.predicted_s:.1f}s against an SLO of {cfg.slo_s:g}s); "
                "retry later",
                type_="server_error",
                code="overloaded",
                retry_after_s=adm.retry_after_s,
            )
        return Routed(entry, score, pct)

    async def _images(
        self, plane: Plane, routed: Routed, req: GenerationRequest, deadline: float, rid: str
    ) -> list[ImageOutcome]:
        seeds = [(req.seed + k) % 2**63 if req.seed is not None else random.getrandbits(63) for k in range(req.n)]
        try:
            calls = (self._image(plane, routed.entry, req.prompt, s, deadline) for s in seeds)
            return list(await asyncio.gather(*calls))
        except WorkerUnavailable as e:
            self.metrics.rejected.labels(plane.cfg.cascade, "unavailable").inc()
            _log(logging.WARNING, "no worker answered", request_id=rid, error=str(e))
            raise ApiError(
                503, "no worker could serve this request in time", type_="server_error", code="unavailable",
                retry_after_s=1.0,
            ) from None  # fmt: skip

    def _time_allowed(self, plane: Plane) -> float:
        """The SLO; for a cold start (scale to zero, a tier with no pod) the cold-start timeout,
        having asked the operator for workers: the request is held, not refused."""
        cold = plane.cfg.cold_start
        if cold is None or all(plane.clients[n].pool.candidates() for n in TIERS):
            return plane.cfg.slo_s
        if self.waker.wake(cold):
            self.metrics.cold_starts.labels(plane.cfg.cascade).inc()
        return max(plane.cfg.slo_s, cold.timeout_s)

    def _record(self, cfg: RouterConfig, elapsed: float, images: list[ImageOutcome]) -> None:
        c = cfg.cascade
        self.metrics.latency.labels(c).observe(elapsed)
        if elapsed > cfg.slo_s:
            self.metrics.slo_violations.labels(c).inc()
        for im in images:
            self.metrics.images.labels(c, im.model).inc()

    async def handle_generate(self, request: web.Request) -> web.Response:
        plane = self.plane  # this request's config, clients and loads, whatever reloads meanwhile
        cfg = plane.cfg
        rid = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        t0 = time.monotonic()
        self.metrics.arrivals.labels(cfg.cascade).inc()
        self.metrics.in_flight.labels(cfg.cascade).inc()
        try:
            self._authorize(request, cfg)
            req = await self._read_request(request, cfg)
            self.metrics.requested_images.labels(cfg.cascade).inc(req.n)
            routed = self._route(plane, req)
            images = await self._images(plane, routed, req, t0 + self._time_allowed(plane), rid)
        except ApiError as e:
            if e.status < 500:  # a 5xx is counted where it is raised (overload, unavailable)
                self.metrics.rejected.labels(cfg.cascade, e.reason).inc()
            _log(logging.INFO, "request refused", request_id=rid, status=e.status, error=e.message)
            return web.json_response(e.body(), status=e.status, headers={"X-Request-Id": rid, **e.headers()})
        except Exception:  # a fault of ours: a JSON 500 the client can read, counted, traceback logged
            self.metrics.rejected.labels(cfg.cascade, "internal").inc()
            log.exception("request failed in the router (request_id %s)", rid)
            err = ApiError(
                500,
                "the router failed on this request; its log has the cause",
                type_="server_error",
                code="internal_error",
            )
            return web.json_response(err.body(), status=500, headers={"X-Request-Id": rid})
        finally:
            self.metrics.in_flight.labels(cfg.cascade).dec()
        elapsed = time.monotonic() - t0
        self._record(cfg, elapsed, images)
        _log(
            logging.INFO,
            "request served",
            request_id=rid,
            route=routed.entry,
            score=round(routed.score, 4),
            score_percentile=round(routed.percentile, 4),
            models=[im.model for im in images],
            escalated=sum(im.escalated for im in images),
            degraded=sum(im.degraded is not None for im in images),
            seconds=round(elapsed, 4),
        )
        return generation_response(images, rid)

    def _tier_gauges(self) -> None:
        """Admission's view of each tier, computed when scraped."""
        plane, m = self.plane, self.metrics
        c = plane.cfg.cascade
        for name in TIERS:
            load, model = plane.loads[name], plane.tier(name).name
            capacity = load.effective()[1]
            source = "profile" if load.prior_capacity else "learned"
            m.tier_capacity.labels(c, model, source).set(capacity or 0.0)
            m.tier_capacity.labels(c, model, "profile" if source == "learned" else "learned").set(0.0)
            m.tier_predicted.labels(c, model).set(load.predicted_latency(1))
            m.tier_in_flight.labels(c, model).set(load.in_flight)
            m.queue_depth.labels(c, model).set(self.queues[_pool_key(plane.tier(name))].depth)

    async def handle_metrics(self, _request: web.Request) -> web.Response:
        self._tier_gauges()
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def handle_healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def handle_openapi(self, _request: web.Request) -> web.Response:
        return web.json_response(openapi_document(self.cfg, __version__))

    def _ready(self) -> bool:
        # Either tier serves: with no light pod (a rollout, a re-plan to another light model) the
        # heavy tier answers every request (``heavy_fallback``); the router leaves its Service
        # only when neither can.
        if self.cfg.cold_start is not None:
            return True  # scaled to zero it has no worker, and holds requests while one starts
        return bool(self.ready_endpoints["light"] or self.ready_endpoints["heavy"])

    async def handle_readyz(self, _request: web.Request) -> web.Response:
        """Readiness on the inference port: no detail for whoever can reach it."""
        ok = self._ready()
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    async def handle_readyz_detail(self, _request: web.Request) -> web.Response:
        """Readiness on the admin port, with the ready worker endpoints and the dispatch source."""
        ok = self._ready()
        body = {"ready": ok, "ready_endpoints": {k: sorted(v) for k, v in self.ready_endpoints.items()}}
        body["cascade"] = self.cfg.cascade
        body["dispatch"] = {n: self.plane.clients[n].pool.source for n in TIERS}
        body["api_keys"] = None if self.keys is None else len(self.keys.by_digest)
        return web.json_response(body, status=200 if ok else 503)


async def read_body(request: web.Request, limits: Limits) -> bytes:
    """The request body, held to ``limits.max_body_bytes`` whether its length is declared or it
    comes chunked (counted as it arrives: nothing past the limit is buffered), and to
    ``limits.body_timeout_s`` as a whole: 413 or 408, never an unbounded wait or buffer."""
    cap = limits.max_body_bytes
    length = request.content_length
    if length is not None and length > cap:
        raise ApiError(413, f"request body is {length} bytes; the limit is {cap}")
    body = bytearray()
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            while chunk := await request.content.read(min(64 * 1024, cap + 1 - len(body))):
                body += chunk
                if len(body) > cap:
                    raise ApiError(413, f"request body exceeds {cap} bytes")
    except TimeoutError:
        raise ApiError(408, f"request body not received within {limits.body_timeout_s:g}s") from None
    return bytes(body)


def generation_response(images: list[ImageOutcome], rid: str) -> web.Response:
    """OpenAI's images response, with which model served each image and whether it was escalated
    or degraded (in the body and as headers)."""
    data = [
        {
            "b64_json": base64.b64encode(im.result.png).decode(),
            "revised_prompt": None,
            "model": im.model,
            "escalated": im.escalated,
            "degraded": im.degraded is not None,
            "degraded_reason": im.degraded,
            "confidence": im.result.confidence,
            "discriminator": im.result.discriminator,
        }
        for im in images
    ]
    headers = {
        "X-Request-Id": rid,
        "X-Hadis-Model": ",".join(im.model for im in images),
        "X-Hadis-Escalated": ",".join(str(im.escalated).lower() for im in images),
        "X-Hadis-Degraded": ",".join(str(im.degraded is not None).lower() for im in images),
    }
    return web.json_response({"created": int(time.time()), "data": data}, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler):
    """Framework errors (unknown path, wrong method, oversized body) as OpenAI-style JSON."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        err = ApiError(e.status, f"{e.reason}: {request.method} {request.path}")
        keep = {k: v for k, v in e.headers.items() if k.lower() in ("allow", "retry-after")}  # 405 must say Allow
        return web.json_response(err.body(), status=e.status, headers=keep)


def make_app(router: Router) -> web.Application:
    """The inference port: the images API and the probes, nothing an operator alone should read."""
    app = web.Application(client_max_size=HARD_BODY_LIMIT, middlewares=[json_errors])
    app.router.add_post("/v1/images/generations", router.handle_generate)
    app.router.add_get("/healthz", router.handle_healthz)
    app.router.add_get("/readyz", router.handle_readyz)
    app.on_startup.append(router.start)
    app.on_cleanup.append(router.stop)
    return app


def make_admin_app(router: Router) -> web.Application:
    """The admin port: metrics, the OpenAPI document and detailed readiness, for scrapers and
    operators (a NetworkPolicy or the mesh keeps clients to the inference port)."""
    app = web.Application(client_max_size=1024, middlewares=[json_errors])
    app.router.add_get("/metrics", router.handle_metrics)
    app.router.add_get("/healthz", router.handle_healthz)
    app.router.add_get("/readyz", router.handle_readyz_detail)
    app.router.add_get("/openapi.json", router.handle_openapi)
    return app


def with_admin_port(app: web.Application, router: Router, host: str, port: int) -> web.Application:
    """Serve ``make_admin_app`` on ``port`` for as long as ``app`` runs."""
    runner = web.AppRunner(make_admin_app(router), access_log=None)

    async def start(_app: web.Application) -> None:
        await runner.setup()
        await web.TCPSite(runner, host, port).start()

    async def stop(_app: web.Application) -> None:
        await runner.cleanup()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


def serve(config_path: str, host: str = "127.0.0.1", port: int = 8080, admin_port: int = 9090) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    log.addHandler(handler)
    log.setLevel(os.environ.get("HADIS_LOG_LEVEL", "INFO"))
    log.propagate = False
    router = Router(config_path)
    ProcessCollector(registry=router.metrics.registry)  # the served process's memory and CPU
    _log(logging.INFO, "router starting", host=host, port=port, admin_port=admin_port, cascade=router.cfg.cascade)
    app = with_admin_port(make_app(router), router, host, admin_port)
    web.run_app(app, host=host, port=port, print=None, access_log=None)
