"""The router: an OpenAI-compatible image API in front of a light and a heavy Triton tier.

HTTP stack: aiohttp. tritonclient's asyncio client is built on aiohttp, so one library and one
event loop serve both the ingress and the worker calls; it is a mature server with request
size limits and no extra ASGI layer to run.

Per request: validate, score the prompt, take its percentile among recent prompts, route it
light or straight to heavy, admit it only if the tier can finish within the SLO (else 503 with
Retry-After), call the workers, escalate a light image whose confidence is in the bottom
``discRatio``, and answer with which model served each image and whether it was escalated or
degraded. Policy when the heavy tier is down or saturated: the light image is served, flagged
``degraded``; when the light tier is down too, 503.
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
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hadis.core.errors import DataError
from hadis.core.routing import after_light, entry_tier, routes_to_heavy
from hadis.core.streaming import StreamingPercentile
from hadis.router.admission import TierLoad, admit
from hadis.router.api import ApiError, parse_generation_request
from hadis.router.config import RouterConfig, Tier, model_ready_path, parse_config
from hadis.router.metrics import RouterMetrics
from hadis.router.triton import TierClient, WorkerResult, WorkerUnavailable

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


def _unit(text: str, salt: int = 0) -> float:
    """A stable number in [0, 1) per prompt: splits ties at a percentile cut reproducibly."""
    return zlib.crc32(text.encode("utf-8", errors="replace"), salt) / 2**32


def _make_scorer(cfg: RouterConfig):
    from hadis.scoring.model import load_scorer

    return load_scorer(cfg.scoring.mode, cfg.scoring.model_file)


class Router:
    def __init__(self, config_path: str | Path, metrics: RouterMetrics | None = None):
        self.config_path = Path(config_path)
        self.metrics = metrics or RouterMetrics()
        self.cfg = self._read_config()
        self._stamp = self._file_stamp()
        self.scorer = _make_scorer(self.cfg)
        self.score_pct = StreamingPercentile(self.cfg.scoring.window, self.scorer.score_quantiles)
        self.conf_pct = StreamingPercentile(self.cfg.scoring.window)
        self.tiers: dict[str, TierClient] = {}
        self.loads = {"light": TierLoad(), "heavy": TierLoad()}
        self.ready_endpoints: dict[str, set[str]] = {"light": set(), "heavy": set()}
        self._tasks: list[asyncio.Task] = []
        self._publish_ratios()

    # ------------------------------------------------------------------ configuration
    def _read_config(self) -> RouterConfig:
        try:
            text = self.config_path.read_text(encoding="utf-8")
        except OSError as e:
            raise DataError(str(self.config_path), f"cannot read: {e.strerror}") from None
        return parse_config(text, str(self.config_path))

    def _file_stamp(self) -> tuple[float, int] | None:
        try:
            st = self.config_path.stat()  # follows the symlinks a mounted ConfigMap swaps
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def _publish_ratios(self) -> None:
        c = self.cfg.cascade
        self.metrics.ratio.labels(c, "router").set(self.cfg.router_ratio)
        self.metrics.ratio.labels(c, "disc").set(self.cfg.disc_ratio)

    async def reload_if_changed(self) -> bool:
        """Swap in a changed config file; a bad one is logged and the old config kept.

        Requests in flight keep the config (and worker clients) they started with."""
        stamp = self._file_stamp()
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        old = self.cfg
        try:
            new = self._read_config()
            scorer = _make_scorer(new) if new.scoring != old.scoring else self.scorer
        except DataError as e:
            self.metrics.config_reloads.labels(old.cascade, "error").inc()
            _log(logging.ERROR, "config reload failed; keeping the previous config", error=str(e))
            return False
        if scorer is not self.scorer:
            self.scorer = scorer
            self.score_pct = StreamingPercentile(new.scoring.window, scorer.score_quantiles)
        for name in ("light", "heavy"):
            old_tier: Tier = getattr(old, name)
            if getattr(new, name) != old_tier and name in self.tiers:
                stale = self.tiers.pop(name)
                asyncio.get_running_loop().call_later(new.slo_s * 2, lambda c=stale: asyncio.ensure_future(c.close()))
        self.cfg = new
        self._publish_ratios()
        self.metrics.config_reloads.labels(new.cascade, "ok").inc()
        _log(
            logging.INFO,
            "config reloaded",
            router_ratio=new.router_ratio,
            disc_ratio=new.disc_ratio,
            light=new.light.name,
            heavy=new.heavy.name,
        )
        return True

    def tier(self, name: str) -> TierClient:
        client = self.tiers.get(name)
        if client is None:
            client = self.tiers[name] = TierClient(getattr(self.cfg, name))
        return client

    # ------------------------------------------------------------------ background tasks
    async def _watch_config(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_INTERVAL_S)
            try:
                await self.reload_if_changed()
            except Exception as e:  # never let the watcher die
                _log(logging.ERROR, "config watcher error", error=repr(e))

    async def _probe_workers(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
            while True:
                for name in ("light", "heavy"):
                    ready = set()
                    tier: Tier = getattr(self.cfg, name)
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
        self._tasks = [asyncio.create_task(self._watch_config()), asyncio.create_task(self._probe_workers())]

    async def stop(self, _app: web.Application | None = None) -> None:
        for t in self._tasks:
            t.cancel()
        for client in self.tiers.values():
            await client.close()

    # ------------------------------------------------------------------ request path
    async def _call(self, cfg: RouterConfig, tier: str, prompt: str, seed: int, deadline: float) -> WorkerResult:
        load = self.loads[tier]
        ahead = load.start()
        try:
            result = await self.tier(tier).generate(prompt, seed, deadline)
        except WorkerUnavailable:
            load.abandon()
            self.metrics.worker_errors.labels(cfg.cascade, getattr(cfg, tier).name).inc()
            raise
        except BaseException:
            load.abandon()
            raise
        load.finish(result.latency_s, time.monotonic(), ahead)
        return result

    def _light(self, cfg: RouterConfig, res: WorkerResult, degraded: str | None = None) -> ImageOutcome:
        """The light image is the answer; ``degraded`` says why heavy was not used, if it was due."""
        self.metrics.decisions.labels(cfg.cascade, "light").inc()
        if degraded:
            self.metrics.degraded.labels(cfg.cascade, degraded).inc()
        return ImageOutcome(res, cfg.light.name, degraded=degraded)

    async def _image(self, cfg: RouterConfig, entry: str, prompt: str, seed: int, deadline: float) -> ImageOutcome:
        """One image from the tier ``entry`` names (``hadis.core.routing.entry_tier``)."""
        c = cfg.cascade
        if entry == "degrade":  # heavy was saturated at admission: light, never escalated
            return self._light(cfg, await self._call(cfg, "light", prompt, seed, deadline), "heavy_saturated")
        if entry == "heavy":
            try:
                res = await self._call(cfg, "heavy", prompt, seed, deadline)
                self.metrics.decisions.labels(c, "direct_heavy").inc()
                return ImageOutcome(res, cfg.heavy.name)
            except WorkerUnavailable:
                if deadline - time.monotonic() <= 0:
                    raise
                return self._light(cfg, await self._call(cfg, "light", prompt, seed, deadline), "heavy_unavailable")
        res = await self._call(cfg, "light", prompt, seed, deadline)
        if res.confidence is None or cfg.disc_ratio <= 0:
            return self._light(cfg, res)
        pct = self.conf_pct.percentile_and_observe(res.confidence, _unit(prompt, seed & 0xFFFFFFFF))
        remaining = deadline - time.monotonic()
        heavy_adm = admit(self.loads["heavy"], 1, remaining, cfg.limits.max_in_flight)
        outcome = after_light(pct, cfg.disc_ratio, heavy_adm.admitted)
        if outcome != "escalate":
            return self._light(cfg, res, "heavy_saturated" if outcome == "degrade" else None)
        try:
            heavy = await self._call(cfg, "heavy", prompt, seed, deadline)
        except WorkerUnavailable:
            return self._light(cfg, res, "heavy_unavailable")
        self.metrics.decisions.labels(c, "escalated").inc()
        return ImageOutcome(heavy, cfg.heavy.name, escalated=True)

    async def handle_generate(self, request: web.Request) -> web.Response:
        cfg = self.cfg
        c = cfg.cascade
        rid = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        t0 = time.monotonic()
        deadline = t0 + cfg.slo_s
        self.metrics.arrivals.labels(c).inc()
        self.metrics.in_flight.labels(c).inc()
        try:
            length = request.content_length
            if length is not None and length > cfg.limits.max_body_bytes:
                raise ApiError(413, f"request body is {length} bytes; the limit is {cfg.limits.max_body_bytes}")
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise ApiError(413, f"request body exceeds {cfg.limits.max_body_bytes} bytes") from None
            req = parse_generation_request(body, cfg)
            score = self.scorer.score(req.prompt)
            pct = self.score_pct.percentile_and_observe(score, _unit(req.prompt))
            heavy_adm = light_adm = None
            if routes_to_heavy(pct, cfg.router_ratio):
                heavy_adm = admit(self.loads["heavy"], req.n, cfg.slo_s, cfg.limits.max_in_flight)
            if heavy_adm is None or not heavy_adm.admitted:
                light_adm = admit(self.loads["light"], req.n, cfg.slo_s, cfg.limits.max_in_flight)
            entry = entry_tier(
                pct,
                cfg.router_ratio,
                heavy_in_time=heavy_adm is not None and heavy_adm.admitted,
                light_in_time=light_adm is not None and light_adm.admitted,
            )
            if entry == "shed":
                adm = light_adm or heavy_adm
                assert adm is not None
                self.metrics.rejected.labels(c, "overload").inc()
                raise ApiError(
                    503,
                    f"overloaded: {adm.reason} (predicted {adm.predicted_s:.1f}s against an SLO of {cfg.slo_s:g}s); "
                    "retry later",
                    type_="server_error",
                    code="overloaded",
                    retry_after_s=adm.retry_after_s,
                )
            seeds = [(req.seed + k) % 2**63 if req.seed is not None else random.getrandbits(63) for k in range(req.n)]
            try:
                images = await asyncio.gather(*(self._image(cfg, entry, req.prompt, s, deadline) for s in seeds))
            except WorkerUnavailable as e:
                self.metrics.rejected.labels(c, "unavailable").inc()
                _log(logging.WARNING, "no worker answered", request_id=rid, error=str(e))
                raise ApiError(
                    503, "no worker could serve this request in time", type_="server_error", code="unavailable",
                    retry_after_s=1.0,
                ) from None  # fmt: skip
        except ApiError as e:
            if e.status < 500:
                self.metrics.rejected.labels(c, "invalid").inc()
            _log(logging.INFO, "request refused", request_id=rid, status=e.status, error=e.message)
            return web.json_response(e.body(), status=e.status, headers={"X-Request-Id": rid, **e.headers()})
        finally:
            self.metrics.in_flight.labels(c).dec()
        elapsed = time.monotonic() - t0
        self.metrics.latency.labels(c).observe(elapsed)
        if elapsed > cfg.slo_s:
            self.metrics.slo_violations.labels(c).inc()
        for im in images:
            self.metrics.images.labels(c, im.model).inc()
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
        _log(
            logging.INFO,
            "request served",
            request_id=rid,
            route=entry,
            score=round(score, 4),
            score_percentile=round(pct, 4),
            models=[im.model for im in images],
            escalated=sum(im.escalated for im in images),
            degraded=sum(im.degraded is not None for im in images),
            seconds=round(elapsed, 4),
        )
        headers = {
            "X-Request-Id": rid,
            "X-Hadis-Model": ",".join(im.model for im in images),
            "X-Hadis-Escalated": ",".join(str(im.escalated).lower() for im in images),
            "X-Hadis-Degraded": ",".join(str(im.degraded is not None).lower() for im in images),
        }
        return web.json_response({"created": int(time.time()), "data": data}, headers=headers)

    async def handle_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def handle_healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def handle_readyz(self, _request: web.Request) -> web.Response:
        ready = {k: sorted(v) for k, v in self.ready_endpoints.items()}
        ok = bool(self.ready_endpoints["light"])
        status = 200 if ok else 503
        return web.json_response({"ready": ok, "ready_endpoints": ready, "cascade": self.cfg.cascade}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler):
    """Framework errors (unknown path, wrong method, oversized body) as OpenAI-style JSON."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        err = ApiError(e.status, f"{e.reason}: {request.method} {request.path}")
        return web.json_response(err.body(), status=e.status)


def make_app(router: Router) -> web.Application:
    app = web.Application(client_max_size=HARD_BODY_LIMIT, middlewares=[json_errors])
    app.router.add_post("/v1/images/generations", router.handle_generate)
    app.router.add_get("/metrics", router.handle_metrics)
    app.router.add_get("/healthz", router.handle_healthz)
    app.router.add_get("/readyz", router.handle_readyz)
    app.on_startup.append(router.start)
    app.on_cleanup.append(router.stop)
    return app


def serve(config_path: str, host: str = "127.0.0.1", port: int = 8080) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    log.addHandler(handler)
    log.setLevel(os.environ.get("HADIS_LOG_LEVEL", "INFO"))
    log.propagate = False
    router = Router(config_path)
    _log(logging.INFO, "router starting", host=host, port=port, cascade=router.cfg.cascade)
    web.run_app(make_app(router), host=host, port=port, print=None, access_log=None)
