"""The pure rules of Lease-based leader election (the I/O is tested in test_operator_e2e.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from hadis.operator.leader import ElectionConfig, ElectionState, LeaseRecord, lease_body, micro_time

WALL = dt.datetime(2026, 11, 25, 20, 0, 0, tzinfo=dt.UTC)


def test_free_or_own_lease_may_be_taken_at_once():
    me = ElectionState("a")
    assert me.may_take(LeaseRecord(), now=0.0)
    assert me.may_take(LeaseRecord(holder="a", duration_s=15), now=0.0)


def test_someone_elses_lease_only_after_it_went_unrenewed_for_its_duration():
    me = ElectionState("b")
    held = LeaseRecord(holder="a", duration_s=15, renew_time="t1")
    assert not me.may_take(held, now=100.0)
    assert not me.may_take(held, now=114.9)
    assert me.may_take(held, now=115.0)


def test_a_renewal_restarts_the_expiry_clock():
    me = ElectionState("b")
    assert not me.may_take(LeaseRecord(holder="a", duration_s=15, renew_time="t1"), now=100.0)
    renewed = LeaseRecord(holder="a", duration_s=15, renew_time="t2")
    assert not me.may_take(renewed, now=114.0)  # observed changed at 114
    assert not me.may_take(renewed, now=128.0)
    assert me.may_take(renewed, now=129.0)


def test_expiry_ignores_the_holders_clock():
    """A holder whose timestamps are far in the future (clock skew) still expires by our clock."""
    me = ElectionState("b")
    skewed = LeaseRecord(holder="a", duration_s=10, renew_time="2099-01-01T00:00:00.000000Z")
    assert not me.may_take(skewed, now=0.0)
    assert me.may_take(skewed, now=10.0)


def test_claim_renews_or_takes_over():
    me = ElectionState("b")
    new = me.claim(None, WALL, 15)
    assert new == LeaseRecord("b", 15, 0, micro_time(WALL), micro_time(WALL))
    later = WALL + dt.timedelta(seconds=2)
    renewed = me.claim(new, later, 15)
    assert renewed.acquire_time == micro_time(WALL) and renewed.renew_time == micro_time(later)
    assert renewed.transitions == 0
    taken = me.claim(LeaseRecord("a", 15, 3, "x", "y"), later, 15)
    assert taken.holder == "b" and taken.transitions == 4 and taken.acquire_time == micro_time(later)
    released = me.claim(LeaseRecord("", 1, 4, "x", "y"), later, 15)
    assert released.transitions == 4  # taking a released lease is not a transition away from anyone


def test_micro_time_always_has_six_fractional_digits():
    assert micro_time(WALL) == "2026-11-25T20:00:00.000000Z"
    plus_one = dt.datetime(2026, 11, 25, 21, 0, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert micro_time(plus_one) == "2026-11-25T20:00:00.000005Z"


def test_lease_body_carries_the_resource_version_for_optimistic_concurrency():
    cfg = ElectionConfig(name="l", namespace="ns", identity="a")
    body = lease_body(cfg, LeaseRecord("a", 15, 0, "t", "t"), "42")
    assert body["metadata"] == {"name": "l", "namespace": "ns", "resourceVersion": "42"}
    assert body["spec"]["holderIdentity"] == "a" and body["spec"]["leaseDurationSeconds"] == 15
    assert "resourceVersion" not in lease_body(cfg, LeaseRecord("a"), None)["metadata"]


@pytest.mark.parametrize(("duration", "deadline", "retry"), [(10, 10, 2), (15, 10, 10), (15, 10, 0)])
def test_config_refuses_timings_that_could_let_two_leaders_overlap(duration, deadline, retry):
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        ElectionConfig(identity="a", lease_duration_s=duration, renew_deadline_s=deadline, retry_period_s=retry)


def test_config_needs_an_identity():
    with pytest.raises(ValueError, match="identity"):
        ElectionConfig()


@pytest.mark.cluster
def test_a_slow_api_server_cannot_keep_a_leader_acting_past_its_renew_deadline(kube, namespace):
    """The real API server, every call made 3.5 s slow (answers still come, late: etcd
    struggling behind it): the leader stops within its renew deadline of the last renewal,
    before a follower could take the Lease (its duration after it saw that renewal). Each call
    was bounded but a renewal (read + replace: 7 s here) was not, so the leader renewed late,
    forever, acting while a follower with a 6 s lease may have taken over."""
    import asyncio
    import threading
    import time

    import kubernetes

    from hadis.operator.leader import LeaseElector, LostLeadership, run_as_leader

    kubernetes.config.load_kube_config(config_file=kube.kubeconfig)
    real = kubernetes.client.CoordinationV1Api()
    slow = threading.Event()

    class SlowApi:
        def __getattr__(self, name):
            call = getattr(real, name)

            def slowed(*args, **kwargs):
                if slow.is_set():
                    time.sleep(3.5)
                return call(*args, **kwargs)

            return slowed

    cfg = ElectionConfig("slow", namespace, "a", lease_duration_s=6.0, renew_deadline_s=4.0, retry_period_s=0.5)
    times: dict[str, float] = {}

    async def work(stop: asyncio.Event) -> None:
        await asyncio.sleep(1.0)  # a renewal or two at full speed
        slow.set()
        times["slow"] = time.monotonic()
        try:
            await asyncio.wait_for(stop.wait(), 3 * cfg.lease_duration_s)
        except TimeoutError:  # never told to stop: the defect; the raises below fails
            return
        times["stopped"] = time.monotonic()

    with pytest.raises(LostLeadership):
        asyncio.run(run_as_leader(LeaseElector(cfg, SlowApi()), work))
    acted = times["stopped"] - times["slow"]
    print(f"stopped acting {acted:.1f}s after the API server slowed (renew deadline 4 s, lease 6 s)")
    assert acted < cfg.lease_duration_s
