"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go does it.

Only the replica holding the Lease runs the operator, so two replicas never both act. The rules
follow client-go's ``leaderelection`` package:

- A replica may take the Lease when nobody holds it, when it already holds it, or when the
  holder has not renewed it for ``leaseDurationSeconds``. Expiry is judged by this replica's own
  monotonic clock from the moment it *observed* the last change of the record, never by
  comparing the holder's timestamps with the local clock, so clock skew between nodes does not
  matter.
- Writes use the Lease's ``resourceVersion``: of two replicas racing for the same record, the
  API server lets exactly one win (the other gets 409 Conflict).
- The leader renews every ``retry_period``; when it has failed to renew for ``renew_deadline``
  (shorter than the lease duration) it stops acting before anyone else may take over.
- On a clean shutdown the leader releases the Lease so a follower takes over at once.

``ElectionState`` is the pure part (tested without an API server); ``LeaseElector`` does the I/O.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from hadis.operator import metrics
from hadis.operator.health import HealthState

logger = logging.getLogger("hadis.leader")


@dataclasses.dataclass(frozen=True)
class ElectionConfig:
    name: str = "hadis-operator"
    namespace: str = "default"
    identity: str = ""
    lease_duration_s: float = 15.0  # client-go's defaults: 15 s / 10 s / 2 s
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError("leader election needs an identity (e.g. the pod name)")
        if not 0 < self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            raise ValueError(
                "leader election needs 0 < retry period < renew deadline < lease duration, got "
                f"{self.retry_period_s} / {self.renew_deadline_s} / {self.lease_duration_s}"
            )


@dataclasses.dataclass(frozen=True)
class LeaseRecord:
    """The fields of a Lease's spec that the election reads and writes."""

    holder: str = ""
    duration_s: int = 0
    transitions: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None


@dataclasses.dataclass
class ElectionState:
    """What one replica has observed of the Lease, and when (its own monotonic clock)."""

    identity: str
    observed: LeaseRecord | None = None
    observed_at: float = 0.0

    def observe(self, record: LeaseRecord, now: float) -> None:
        if record != self.observed:
            self.observed, self.observed_at = record, now

    def may_take(self, record: LeaseRecord, now: float) -> bool:
        """Whether this replica may write itself into ``record`` (after observing it)."""
        self.observe(record, now)
        if not record.holder or record.holder == self.identity:
            return True
        return now >= self.observed_at + max(record.duration_s, 1)

    def claim(self, record: LeaseRecord | None, wall: dt.datetime, duration_s: float) -> LeaseRecord:
        """The record to write: renewing keeps the acquire time, taking over counts a transition."""
        stamp = micro_time(wall)
        if record is not None and record.holder == self.identity:
            return dataclasses.replace(record, renew_time=stamp, duration_s=math.ceil(duration_s))
        transitions = 0 if record is None else record.transitions + (1 if record.holder else 0)
        return LeaseRecord(self.identity, math.ceil(duration_s), transitions, stamp, stamp)


def micro_time(when: dt.datetime) -> str:
    """RFC 3339 with exactly six fractional digits, as the API server's MicroTime wants."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_of(lease: Any) -> LeaseRecord:
    spec = lease.spec
    return LeaseRecord(
        holder=spec.holder_identity or "",
        duration_s=int(spec.lease_duration_seconds or 0),
        transitions=int(spec.lease_transitions or 0),
        acquire_time=micro_time(spec.acquire_time) if spec.acquire_time else None,
        renew_time=micro_time(spec.renew_time) if spec.renew_time else None,
    )


def lease_body(cfg: ElectionConfig, record: LeaseRecord, resource_version: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": cfg.name, "namespace": cfg.namespace}
    if resource_version:
        meta["resourceVersion"] = resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {
            "holderIdentity": record.holder,
            "leaseDurationSeconds": record.duration_s,
            "leaseTransitions": record.transitions,
            "acquireTime": record.acquire_time,
            "renewTime": record.renew_time,
        },
    }


class LeaseElector:
    """Acquire, renew and release one Lease through the Kubernetes API (blocking calls)."""

    def __init__(self, cfg: ElectionConfig, api: Any | None = None) -> None:
        import kubernetes

        self.cfg = cfg
        self.api = api or kubernetes.client.CoordinationV1Api()
        self.state = ElectionState(cfg.identity)
        # An attempt ends within the renew deadline, as client-go's does: against an API server
        # that hangs (its etcd away) a call without a timeout blocked the loop for a minute,
        # the liveness probe saw a stalled election and the kubelet restarted every replica.
        self.timeout_s = cfg.renew_deadline_s

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this replica holds the Lease afterwards."""
        from kubernetes.client.rest import ApiException

        cfg, now, wall = self.cfg, time.monotonic(), dt.datetime.now(dt.UTC)
        try:
            lease = self.api.read_namespaced_lease(cfg.name, cfg.namespace, _request_timeout=self.timeout_s)
        except ApiException as e:
            if e.status != 404:
                raise
            record = self.state.claim(None, wall, cfg.lease_duration_s)
            try:
                self.api.create_namespaced_lease(
                    cfg.namespace, lease_body(cfg, record, None), _request_timeout=self.timeout_s
                )
            except ApiException as e2:
                if e2.status == 409:  # another replica created it first
                    return False
                raise
            self.state.observe(record, now)
            return True
        current = record_of(lease)
        if not self.state.may_take(current, now):
            return False
        record = self.state.claim(current, wall, cfg.lease_duration_s)
        try:
            self.api.replace_namespaced_lease(
                cfg.name,
                cfg.namespace,
                lease_body(cfg, record, lease.metadata.resource_version),
                _request_timeout=self.timeout_s,
            )
        except ApiException as e:
            if e.status == 409:  # someone else wrote it since we read it
                return False
            raise
        self.state.observe(record, now)
        return True

    def holder(self) -> str:
        return self.state.observed.holder if self.state.observed else ""

    def release(self) -> None:
        """Give the Lease up (if still ours) so a follower need not wait for it to expire."""
        from kubernetes.client.rest import ApiException

        cfg = self.cfg
        try:
            lease = self.api.read_namespaced_lease(cfg.name, cfg.namespace)
            if (lease.spec.holder_identity or "") != cfg.identity:
                return
            record = dataclasses.replace(record_of(lease), holder="", duration_s=1)
            self.api.replace_namespaced_lease(
                cfg.name, cfg.namespace, lease_body(cfg, record, lease.metadata.resource_version)
            )
        except ApiException as e:
            logger.warning("could not release the lease %s/%s: %s", cfg.namespace, cfg.name, e.reason)


class LostLeadership(RuntimeError):
    pass


async def run_as_leader(
    elector: LeaseElector,
    work: Callable[[asyncio.Event], Awaitable[None]],
    health: HealthState | None = None,
) -> None:
    """Wait for the Lease, then run ``work(stop_flag)`` while renewing it.

    Returns when ``work`` returns (the Lease is then released). Raises ``LostLeadership`` after
    stopping ``work`` when the Lease could not be renewed within the renew deadline; the process
    should then exit, as client-go's controllers do, and start again as a follower.
    ``health`` is kept current: each attempt, each API contact, and when leading began.
    """
    cfg = elector.cfg
    health = health or HealthState(time.monotonic())

    async def attempt() -> bool:
        try:
            held = await asyncio.to_thread(elector.try_acquire_or_renew)
        finally:
            health.last_attempt = time.monotonic()
        health.last_contact = health.last_attempt
        return held

    async def renew(last_renewal: float) -> tuple[bool, float]:
        """One renewal, bounded as a whole (its read and its write) by what is left of the renew
        deadline: a slow API server must not keep the leader acting past it, since a follower may
        take over a lease duration after it saw the last renewal. The renewal counts from when it
        started: the record it writes can be no older than that."""
        started = time.monotonic()
        left = cfg.renew_deadline_s - (started - last_renewal)
        try:
            renewed = await asyncio.wait_for(attempt(), timeout=max(0.0, left))
            metrics.LEASE_ATTEMPTS.labels("renewed" if renewed else "held_by_other").inc()
        except Exception as e:  # TimeoutError too: the deadline passed during the renewal
            metrics.LEASE_ATTEMPTS.labels("error").inc()
            logger.warning("lease renewal failed: %s", e or type(e).__name__)
            renewed = False
        return renewed, started

    waiting_for = None
    while True:
        try:
            if await attempt():
                metrics.LEASE_ATTEMPTS.labels("acquired").inc()
                break
            metrics.LEASE_ATTEMPTS.labels("held_by_other").inc()
        except Exception as e:  # the API server may be briefly away; keep trying
            metrics.LEASE_ATTEMPTS.labels("error").inc()
            logger.warning("leader election: %s", e)
        if elector.holder() != waiting_for:
            waiting_for = elector.holder()
            logger.info("waiting for the lease %s/%s, held by %s", cfg.namespace, cfg.name, waiting_for)
        await asyncio.sleep(cfg.retry_period_s)
    logger.info("became the leader: lease %s/%s held by %s", cfg.namespace, cfg.name, cfg.identity)
    health.leading_since = time.monotonic()
    stop_flag = asyncio.Event()
    task = asyncio.create_task(work(stop_flag))
    last_renewal = time.monotonic()
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=cfg.retry_period_s)
            if task.done():
                break
            renewed, started = await renew(last_renewal)
            if renewed:
                last_renewal = started
            elif time.monotonic() - last_renewal >= cfg.renew_deadline_s:
                logger.error("lost the lease %s/%s (now %s); stopping", cfg.namespace, cfg.name, elector.holder())
                stop_flag.set()
                await task
                raise LostLeadership(f"lease {cfg.namespace}/{cfg.name} lost to {elector.holder() or 'nobody'}")
        await task
    finally:
        health.leading_since = None
        if not task.done():
            stop_flag.set()
            await asyncio.wait({task}, timeout=cfg.renew_deadline_s)
    await asyncio.to_thread(elector.release)
    logger.info("released the lease %s/%s", cfg.namespace, cfg.name)
