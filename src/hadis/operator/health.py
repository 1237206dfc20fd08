"""What the operator's ``/healthz`` says: pure, so every state is tested without a cluster.

Liveness means the process is doing its job, not that the API server is up (restarting an
operator does not bring an API server back):

- the election loop has made an attempt within three retry periods, and at least 30 s (a stuck
  event loop or a dead election task fails this; one slow API call does not);
- while leading, kopf's operator task is running and kopf reported itself ready (its watches
  started) within ``startup_s`` of taking the Lease.

The answer also carries the figures an operator of the operator wants: leading or not, seconds
since the last successful API round trip, and why it is unhealthy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class HealthState:
    started: float  # time.monotonic() when the process started
    last_attempt: float | None = None  # the election loop's last attempt, whatever its outcome
    last_contact: float | None = None  # its last successful API round trip
    leading_since: float | None = None
    kopf_ready: bool = False
    kopf_stopped: str | None = None  # why kopf's task ended, if it did while leading


def assess(state: HealthState, now: float, retry_period_s: float, startup_s: float = 60.0) -> tuple[bool, dict]:
    """(healthy, the JSON body)."""
    problems: list[str] = []
    stalled_after = max(3 * retry_period_s, 30.0)  # a slow API call is not a stalled loop
    since = state.last_attempt if state.last_attempt is not None else state.started
    if now - since > stalled_after:
        problems.append(f"leader election made no attempt for {now - since:.0f}s")
    leading = state.leading_since is not None
    if leading:
        if state.kopf_stopped:
            problems.append(f"kopf stopped: {state.kopf_stopped}")
        elif not state.kopf_ready and now - state.leading_since > startup_s:
            problems.append(f"kopf not ready {now - state.leading_since:.0f}s after taking the lease")
    body = {
        "status": "ok" if not problems else "unhealthy",
        "leader": leading,
        "kopfReady": state.kopf_ready if leading else None,
        "secondsSinceApiContact": None if state.last_contact is None else round(now - state.last_contact, 1),
        "problems": problems,
    }
    return not problems, body
