"""Calls to one tier's Triton workers (tritonclient, asyncio), with fail-over between replicas.

The endpoints come from an ``EndpointPool``: the tier's ready pods when their EndpointSlices are
watched (the least loaded first), else the tier's Service. Each image is bound to a pod through
the tier's ``PodQueue``: at once when one has room, else after a wait (holding)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import numpy as np
import tritonclient.http.aio as triton_http
from tritonclient.utils import InferenceServerException

from hadis.contract import IN_PROMPT, IN_SEED, OUT_CONFIDENCE, OUT_DISCRIMINATOR, OUT_IMAGE
from hadis.router.config import Tier
from hadis.router.dispatch import EndpointPool
from hadis.router.holding import NoPod, NoPodInTime, PodQueue


@dataclass(frozen=True)
class WorkerResult:
    png: bytes
    confidence: float | None
    discriminator: str | None
    endpoint: str
    latency_s: float  # the worker's call, from binding to the answer
    queued_s: float = 0.0  # waiting for a pod with room


class WorkerUnavailable(Exception):
    """No replica of the tier answered (every endpoint failed or the deadline passed)."""


class MalformedAnswer(Exception):
    """A worker answered, but not with an image (no IMAGE output, a body that is not the
    protocol's): a broken replica, tried no further for this image."""


def _client(endpoint: str) -> triton_http.InferenceServerClient:
    """A Triton client that opens a connection per request. An endpoint is usually a Kubernetes
    Service, and kube-proxy balances connections, not requests: kept-alive connections pin the
    traffic to the pods that existed when they opened, so a replica added under load got almost
    none (seen on the local cluster's real node). A connect on the cluster network costs well
    under a millisecond against an image's hundreds."""
    client = triton_http.InferenceServerClient(endpoint)
    # tritonclient has no option for either; aiohttp reads both per request. Its conn_timeout is
    # the *total* time of a call, which cut off every image slower than 2 s (the deadline is
    # enforced by generate()); only connecting is bounded here.
    client._conn._force_close = True
    client._stub._timeout = aiohttp.ClientTimeout(total=None, sock_connect=2.0)
    return client


class TierClient:
    """The least loaded of a tier's endpoints first; a failed connection is retried on the next."""

    def __init__(self, tier: Tier, queue: PodQueue | None = None, on_bad_answer: Callable[[str], None] | None = None):
        self.tier = tier
        self.queue = queue or PodQueue(EndpointPool(tier.endpoints))
        self.on_bad_answer = on_bad_answer  # called with the model's name for each malformed answer
        self._clients: dict[str, triton_http.InferenceServerClient] = {}

    @property
    def pool(self) -> EndpointPool:
        return self.queue.pool

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for c in clients.values():
            await c.close()

    def _client_for(self, endpoint: str) -> triton_http.InferenceServerClient:
        client = self._clients.get(endpoint)
        if client is None:
            client = self._clients[endpoint] = _client(endpoint)
        return client

    async def _prune(self) -> None:
        """Close the clients of pods that are gone (a client holds no connection between calls).
        Taken out of the map before the first await: requests prune concurrently (every one
        that arrives after the pods went, as on a cold start), and each closes only its own."""
        live = set(self.pool.candidates())
        gone = [self._clients.pop(e) for e in list(self._clients) if e not in live and not self.pool.in_flight.get(e)]
        for client in gone:
            await client.close()

    async def generate(self, prompt: str, seed: int, deadline: float, bind_by: float | None = None) -> WorkerResult:
        """One image before ``deadline`` (a ``time.monotonic()`` value), or WorkerUnavailable.
        ``bind_by``: the last moment to start it (the deadline less one image's service)."""
        errors: list[str] = []
        if len(self._clients) > len(self.pool.candidates()):
            await self._prune()
        tried: set[str] = set()
        t_arrive = time.monotonic()
        while True:
            try:
                endpoint = await self.queue.bind(deadline if bind_by is None else bind_by, frozenset(tried))
            except (NoPod, NoPodInTime) as e:
                errors.append(str(e))
                break
            tried.add(endpoint)
            t0 = time.monotonic()
            remaining = deadline - t0
            if remaining <= 0:
                self.pool.finish(endpoint)
                errors.append("deadline passed")
                break
            timeout = min(remaining, self.tier.timeout_s) if self.tier.timeout_s else remaining
            try:
                result = await asyncio.wait_for(self._infer(endpoint, prompt, seed), timeout)
            except TimeoutError:
                errors.append(f"{endpoint}: no answer within {timeout:.1f}s")
                break  # the deadline is spent: another replica cannot finish in time either
            except (aiohttp.ClientError, OSError, InferenceServerException) as e:
                errors.append(f"{endpoint}: {type(e).__name__}: {str(e)[:200]}")
                continue
            except MalformedAnswer as e:  # the next replica may be sound
                errors.append(f"{endpoint}: malformed answer: {str(e)[:200]}")
                if self.on_bad_answer is not None:
                    self.on_bad_answer(self.tier.name)
                continue
            finally:
                self.pool.finish(endpoint)
            png, conf, disc = result
            return WorkerResult(png, conf, disc, endpoint, time.monotonic() - t0, t0 - t_arrive)
        raise WorkerUnavailable(f"{self.tier.name}: " + "; ".join(errors))

    async def _infer(self, endpoint: str, prompt: str, seed: int) -> tuple[bytes, float | None, str | None]:
        p = triton_http.InferInput(IN_PROMPT, [1, 1], "BYTES")
        p.set_data_from_numpy(np.array([[prompt.encode("utf-8", errors="replace")]], dtype=object))
        s = triton_http.InferInput(IN_SEED, [1, 1], "INT64")
        s.set_data_from_numpy(np.array([[seed]], dtype=np.int64))
        try:
            r = await self._client_for(endpoint).infer(self.tier.name, [p, s])
            png = r.as_numpy(OUT_IMAGE)
            if png is None:
                raise MalformedAnswer("no IMAGE output")
            conf = r.as_numpy(OUT_CONFIDENCE)
            disc = r.as_numpy(OUT_DISCRIMINATOR)
            return (
                bytes(png[0][0]),
                None if conf is None else float(conf[0][0]),
                None if disc is None else bytes(disc[0][0]).decode(errors="replace"),
            )
        except (ValueError, TypeError, KeyError, IndexError) as e:  # a 200 whose body is not the protocol's
            raise MalformedAnswer(f"{type(e).__name__}: {e}") from None
