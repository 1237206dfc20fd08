"""Hold, don't shed: a tier's images wait in one FIFO until a pod has room (late binding).

Admission (``hadis.router.admission``) has already said the image can be served in time,
counting the pods the plan is bringing up; here it waits for one of them, or for a slot on a
ready pod, in arrival order. A waiter leaves the queue

- bound to a pod, counted in flight there (``EndpointPool.start``), or
- with ``NoPodInTime`` when its ``bind_by`` time passes: it could no longer be served before its
  deadline, so it is refused then rather than late, or
- with ``NoPod`` at once when the tier has no pod it has not tried and none is coming: the
  caller fails over to the other tier, as before holding. A cascade that scales to zero
  (``cold``) waits for the first pod instead while it has none.

A pod that frees a slot, or a change of the ready pods, wakes the queue (``EndpointPool.on_change``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass

from hadis.router.config import Capacity
from hadis.router.dispatch import EndpointPool

# Without a measured pod start time, a pod the plan asked for counts as capacity this long after
# the router first saw it missing: long enough that a slow start is not promised to a request.
DEFAULT_START_S = 60.0


class NoPod(Exception):
    """The tier has no pod to try and none is coming."""


class NoPodInTime(Exception):
    """No pod had room before the request's bind-by time."""


@dataclass
class _Waiter:
    future: asyncio.Future
    exclude: frozenset[str]
    bind_by: float


def expected_capacity(pool: EndpointPool, capacity: Capacity | None, now: float) -> tuple[float, float | None]:
    """(images per second, when) the pods the plan asked for and that are not Ready yet will
    add: each counts from its start time after the router first saw it missing, and not at
    all once it is late by another start time (unschedulable, failing): a request is then not
    admitted against it."""
    if capacity is None or pool.short_since is None or not pool.coming():
        return 0.0, None
    start = capacity.start_s if capacity.start_s is not None else DEFAULT_START_S
    due = pool.short_since + start
    if now > due + start:
        return 0.0, None
    return capacity.per_replica * pool.coming(), max(due, now)


class PodQueue:
    """One tier Service's waiting images, over its ``EndpointPool``."""

    def __init__(self, pool: EndpointPool):
        self.pool = pool
        self.hold = False  # wait for a slot or a coming pod; off: bind now or fail over
        self.cold = False  # scale to zero: with no pod at all, wait for the first (a cold start)
        # when the pods the plan is bringing up are expected Ready (``expected_capacity``); None:
        # none is coming, or it is overdue. An image with no pod waits for them only if they come
        # before its bind-by time: else it fails over now (a one-pod tier's rollout: heavy serves)
        self.expected_at: float | None = None
        self._waiters: deque[_Waiter] = deque()
        pool.on_change = self.wake

    @property
    def depth(self) -> int:
        """Images waiting for a pod."""
        return sum(1 for w in self._waiters if not w.future.done())

    def _may_wait(self, exclude: frozenset[str], bind_by: float) -> bool:
        if self.cold and not self.pool.candidates():
            return True
        if not self.hold:
            return False
        if any(e not in exclude for e in self.pool.candidates()):
            return True  # a pod that may free a slot
        return self.pool.coming() > 0 and self.expected_at is not None and self.expected_at <= bind_by

    async def bind(self, bind_by: float, exclude: frozenset[str] = frozenset()) -> str:
        """A pod for one image, counted in flight there; the caller ``pool.finish``-es it.
        ``bind_by``: a ``time.monotonic()`` value after which the image is not worth starting."""
        if not self.depth:  # nobody ahead: no overtaking of waiters
            endpoint = self.pool.pick(exclude)
            if endpoint is not None:
                self.pool.start(endpoint)
                return endpoint
        if not self._may_wait(exclude, bind_by):
            raise NoPod("no endpoints" if not self.pool.candidates() else "every endpoint was tried")
        waiter = _Waiter(asyncio.get_running_loop().create_future(), exclude, bind_by)
        self._waiters.append(waiter)
        try:
            await asyncio.wait({waiter.future}, timeout=max(0.0, bind_by - time.monotonic()))
        except BaseException:  # cancelled: a pod bound meanwhile goes back
            self._abandon(waiter)
            raise
        f = waiter.future
        if f.done() and not f.cancelled():
            if isinstance(f.exception(), NoPod):
                raise NoPod(str(f.exception()))
            return f.result()
        self._abandon(waiter)
        raise NoPodInTime("no pod had room in time")

    def _abandon(self, waiter: _Waiter) -> None:
        """Take ``waiter`` out of the queue, giving back a pod bound to it."""
        f = waiter.future
        if not f.done():
            f.cancel()
        elif not f.cancelled() and f.exception() is None:
            self.pool.finish(f.result())
        with contextlib.suppress(ValueError):  # already taken off by wake()
            self._waiters.remove(waiter)

    def wake(self) -> None:
        """Bind the waiters at the head while pods have room; fail them over when nothing is left."""
        while self._waiters:
            w = self._waiters[0]
            if w.future.done():
                self._waiters.popleft()
                continue
            endpoint = self.pool.pick(w.exclude)
            if endpoint is None:
                if not self._may_wait(w.exclude, w.bind_by):
                    self._waiters.popleft()
                    w.future.set_exception(NoPod("no pod left and none coming"))
                    continue
                return
            self.pool.start(endpoint)
            self._waiters.popleft()
            w.future.set_result(endpoint)
