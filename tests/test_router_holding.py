"""Holding: admission that counts the pods coming, and the per-tier queue that binds late."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from hadis.router.admission import TierLoad, admit, drain_seconds
from hadis.router.config import Capacity
from hadis.router.dispatch import EndpointPool
from hadis.router.holding import DEFAULT_START_S, NoPod, NoPodInTime, PodQueue, expected_capacity


def test_drain_seconds_counts_the_coming_rate_from_when_it_comes():
    assert drain_seconds(4, 2.0, 2.0, 5.0) == 2.0  # drained before the new pods arrive
    assert drain_seconds(4, 0.0, 2.0, 5.0) == 7.0  # nothing ready: wait for them, then 2/s
    assert drain_seconds(12, 1.0, 1.0, 4.0) == 8.0  # 4 by then, the other 8 at 2/s
    assert drain_seconds(1, 0.0, 0.0, 1.0) == math.inf


def test_admission_holds_for_coming_pods_only_when_they_finish_in_time():
    load = TierLoad(prior_base_s=1.0, prior_capacity=0.0)  # no replica ready
    load.coming_capacity, load.coming_at = 2.0, 105.0
    assert load.predicted_latency(1, now=100.0) == 6.0  # 5 s to the pod, then one image
    assert admit(load, 1, 10.0, 64, now=100.0).admitted
    late = admit(load, 1, 4.0, 64, now=100.0)
    assert not late.admitted and late.retry_after_s == 2.0  # predicted 6 against 4
    load.in_flight = 8
    assert load.predicted_latency(1, now=100.0) == 10.0  # 8 images ahead at 2/s after 5 s
    assert load.predicted_latency(1) == 1.0  # without holding: the old optimistic answer


def test_a_shortfall_of_ready_pods_is_capacity_coming_until_it_is_overdue():
    pool = EndpointPool(("svc:8000",))
    cap = Capacity(base_s=1.0, per_replica=2.0, replicas=3, slots=2, start_s=10.0)
    pool.plan(3, 2, now=0.0)
    assert pool.coming() == 0 and expected_capacity(pool, cap, 0.0) == (0.0, None)  # no watch yet
    pool.update(("10.0.0.1:8000",))
    pool.plan(3, 2, now=50.0)
    assert pool.coming() == 2 and pool.short_since == 50.0
    assert expected_capacity(pool, cap, 52.0) == (4.0, 60.0)
    assert expected_capacity(pool, cap, 65.0) == (4.0, 65.0)  # late: still counted, from now
    assert expected_capacity(pool, cap, 71.0) == (0.0, None)  # late by another start time
    no_start = Capacity(base_s=1.0, per_replica=2.0, replicas=3)
    assert expected_capacity(pool, no_start, 52.0) == (4.0, 50.0 + DEFAULT_START_S)
    pool.update(("10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"))
    pool.plan(3, 2, now=80.0)
    assert pool.coming() == 0 and pool.short_since is None


def test_a_service_address_holds_the_slots_of_every_planned_replica():
    pool = EndpointPool(("svc:8000",))
    pool.plan(3, 2, now=0.0)
    assert pool.room("svc:8000") == 6
    pool.update(("a:1", "b:1"))
    assert pool.room("a:1") == 2
    pool.start("a:1")
    pool.start("a:1")
    assert pool.pick() == "b:1" and pool.pick(exclude={"b:1"}) is None


def _queue(endpoints=("a:1",), slots=1, expected=1) -> PodQueue:
    pool = EndpointPool(("svc:8000",))
    q = PodQueue(pool)
    q.hold = True
    pool.update(endpoints)
    pool.plan(expected, slots, time.monotonic())
    return q


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_images_wait_in_arrival_order_for_a_slot_and_bind_when_one_frees():
    async def main():
        q = _queue()
        first = await q.bind(time.monotonic() + 10)
        order: list[int] = []

        async def wait(k: int) -> str:
            ep = await q.bind(time.monotonic() + 10)
            order.append(k)
            return ep

        tasks = [asyncio.create_task(wait(k)) for k in range(3)]
        await _settle()
        assert q.depth == 3 and q.pool.in_flight["a:1"] == 1  # late binding: one at the pod
        for k in range(3):
            q.pool.finish(first if k == 0 else "a:1")
            await _settle()
            assert order == list(range(k + 1)) and q.pool.in_flight["a:1"] == 1
        await asyncio.gather(*tasks)
        assert q.depth == 0

    asyncio.run(main())


def test_a_waiter_gives_up_at_its_bind_by_time_and_a_cancelled_one_gives_its_pod_back():
    async def main():
        q = _queue()
        await q.bind(time.monotonic() + 10)
        with pytest.raises(NoPodInTime):
            await q.bind(time.monotonic() + 0.05)
        assert q.depth == 0
        task = asyncio.create_task(q.bind(time.monotonic() + 10))
        await _settle()
        q.pool.finish("a:1")  # binds the waiter ...
        task.cancel()  # ... which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await task
        assert q.pool.in_flight["a:1"] == 0 and q.depth == 0

    asyncio.run(main())


def test_with_no_pod_an_image_waits_for_a_coming_one_and_fails_over_when_none_is():
    async def main():
        q = _queue(endpoints=(), expected=1)
        q.expected_at = time.monotonic() + 30  # the coming pod is Ready only after the bind-by time
        with pytest.raises(NoPod):  # fail over now (heavy may serve it), do not wait in vain
            await q.bind(time.monotonic() + 10)
        q.expected_at = time.monotonic() + 1
        task = asyncio.create_task(q.bind(time.monotonic() + 10))
        await _settle()
        assert q.depth == 1
        q.pool.update(("new:1",))  # the coming pod is Ready
        assert await task == "new:1"
        q.pool.finish("new:1")
        q.pool.update(())
        q.pool.plan(0, 1, time.monotonic())  # scaled down: nothing coming
        with pytest.raises(NoPod):
            await q.bind(time.monotonic() + 10)
        q.pool.plan(1, 1, time.monotonic())
        q.expected_at = time.monotonic() + 1
        waiting = asyncio.create_task(q.bind(time.monotonic() + 10))
        await _settle()
        q.pool.plan(0, 1, time.monotonic())  # the plan gives the pod up while one waits for it
        with pytest.raises(NoPod):
            await waiting

    asyncio.run(main())


def test_without_holding_an_image_binds_at_once_or_fails_over():
    async def main():
        q = _queue(slots=None)
        q.hold = False
        eps = [await q.bind(time.monotonic() + 10) for _ in range(5)]
        assert eps == ["a:1"] * 5  # no slot limit: the pod's own queue takes them
        with pytest.raises(NoPod):
            await q.bind(time.monotonic() + 10, exclude=frozenset({"a:1"}))

    asyncio.run(main())
