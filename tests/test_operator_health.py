"""The operator's /healthz decisions (hadis.operator.health), every state without a cluster."""

from __future__ import annotations

from hadis.operator.health import HealthState, assess


def test_a_follower_whose_election_loop_runs_is_healthy_even_while_the_api_is_away():
    s = HealthState(started=0.0, last_attempt=99.0, last_contact=40.0)
    ok, body = assess(s, now=100.0, retry_period_s=2.0)
    assert ok and body["leader"] is False and body["secondsSinceApiContact"] == 60.0


def test_a_stalled_election_loop_is_unhealthy():
    ok, body = assess(HealthState(started=0.0, last_attempt=50.0), now=100.0, retry_period_s=2.0)
    assert not ok and "no attempt for 50s" in body["problems"][0]
    assert assess(HealthState(started=0.0, last_attempt=80.0), now=100.0, retry_period_s=2.0)[0]  # one slow call
    ok, _ = assess(HealthState(started=0.0), now=5.0, retry_period_s=2.0)  # just started
    assert ok


def test_the_leader_needs_kopf_ready_within_the_startup_window_and_running():
    s = HealthState(started=0.0, last_attempt=99.0, leading_since=90.0)
    assert assess(s, 100.0, 2.0)[0]  # kopf starting
    s.leading_since = 10.0
    ok, body = assess(s, 100.0, 2.0)
    assert not ok and "kopf not ready" in body["problems"][0]
    s.kopf_ready = True
    ok, body = assess(s, 100.0, 2.0)
    assert ok and body["kopfReady"] is True
    s.kopf_stopped = "RuntimeError('boom')"
    ok, body = assess(s, 100.0, 2.0)
    assert not ok and body["status"] == "unhealthy" and "boom" in body["problems"][0]
