"""When to re-plan, and for what rate: early on a surge, late on a fall.

Written once for the simulator's ``hadis`` policy and the operator's re-plan daemon. The
caller checks often (every second in the simulator, every few seconds in the operator) with
its current demand estimate (``hadis.core.demand.FastRiseEstimator``) and, where it knows
them, how long the queued work would take to drain, as a share of the SLO. The trigger says
whether to re-plan now and which rate to plan for:

- **rise**: the estimate is above the rate the current plan was made for by ``rise_ratio``
  (and by ``min_rise_rps``, so low rates do not trigger on noise): re-plan at once, for the
  estimate;
- **backlog**: queued work would take ``backlog_ratio`` of the SLO or more to drain: re-plan at
  once, for at least the planned rate (the planner sees the queues);
- **timer**: the regular re-plan, for the estimate when it rose and for the planned rate when
  it fell, unless the fall has lasted ``scale_down_delay_s``: capacity is released only once
  the demand has stayed low, so a lull between spikes does not move GPUs back and forth.

Early re-plans are at least ``cooldown_s`` apart; the hysteresis between ``rise_ratio`` and
``fall_ratio`` keeps a steady rate from flapping between two plans.

``climbing`` says whether the demand is still rising, for the planner's rise rule (keep the
current split's images/s, ``hadis.core.planner.plan_cascade``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SurgeSettings:
    rise_ratio: float = 1.25
    min_rise_rps: float = 1.0
    fall_ratio: float = 1.0
    backlog_ratio: float = 0.5
    cooldown_s: float = 2.0
    scale_down_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.rise_ratio <= 1.0:
            raise ValueError(f"rise_ratio must be > 1, got {self.rise_ratio}")
        if not 0.0 < self.fall_ratio <= 1.0:
            raise ValueError(f"fall_ratio must be in (0, 1], got {self.fall_ratio}")
        for name in ("min_rise_rps", "backlog_ratio", "cooldown_s", "scale_down_delay_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def climbing(
    rate: float, planned_rate: float | None, rose_at: float | None, now: float, settle_s: float, noise: float = 0.0
) -> tuple[bool, float | None]:
    """(whether the demand is rising, when it last rose) at ``now`` (seconds, any origin).

    It rises when ``rate`` is above the rate of the last plan (``planned_rate``) by more than the
    share ``noise`` of it, and counts as rising for ``settle_s`` after that: a windowed rate of a
    step climbs for one window, and between two scrapes it stands still, so a pass that reads the
    same rate as the last rise is still in the climb, not at its top. ``noise``: a scraped rate
    jitters around a steady load; each read above the highest so far would count as a new rise
    and start the settle time again, so the re-balance after a climb would wait for the jitter's
    last record instead of one window."""
    if planned_rate is not None and rate > planned_rate * (1.0 + noise) + 1e-3:
        return True, now
    return rose_at is not None and now - rose_at < settle_s, rose_at


@dataclass(frozen=True)
class Replan:
    """A decision to re-plan now for ``rate`` req/s, and why (a short machine-readable word)."""

    rate: float
    reason: str  # "initial", "rise", "backlog", "timer", "fall"


@dataclass
class SurgeTrigger:
    settings: SurgeSettings = SurgeSettings()
    planned_rate: float | None = None
    planned_at: float = float("-inf")
    low_since: float | None = None

    def check(self, now: float, estimate: float, backlog: float = 0.0, timer_due: bool = False) -> Replan | None:
        """Whether to re-plan at ``now`` (seconds, any monotonic origin), and for what rate.

        ``backlog`` is the queued work's drain time over the SLO (0 when unknown);
        ``timer_due`` says the regular interval has passed. Returns None to keep the plan."""
        s = self.settings
        planned = self.planned_rate
        if planned is None:
            return self._planned(now, Replan(estimate, "initial"))
        if estimate < s.fall_ratio * planned:
            self.low_since = now if self.low_since is None else self.low_since
        else:
            self.low_since = None
        cooled = now - self.planned_at >= s.cooldown_s
        if cooled and estimate > s.rise_ratio * planned and estimate - planned >= s.min_rise_rps:
            return self._planned(now, Replan(estimate, "rise"))
        if cooled and s.backlog_ratio > 0 and backlog >= s.backlog_ratio:
            return self._planned(now, Replan(max(estimate, planned), "backlog"))
        if not timer_due:
            return None
        if self.low_since is not None and now - self.low_since >= s.scale_down_delay_s:
            return self._planned(now, Replan(estimate, "fall"))
        return self._planned(now, Replan(max(estimate, planned), "timer"))

    def _planned(self, now: float, decision: Replan) -> Replan:
        self.planned_rate = decision.rate
        self.planned_at = now
        if decision.reason == "fall":
            self.low_since = None
        return decision
