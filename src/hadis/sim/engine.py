"""Discrete-event replay of a trace through routing, batching queues and re-planning.

Per arrival: route (router percentile cut) to the light or heavy queue, or for systems without
a cascade to one model by its share. A free GPU takes up to its plan's batch size from its
model's queue, dropping at dequeue any request whose elapsed time plus the expected batch time
exceeds ``drop_factor`` x SLO (HADIS's rule, 1.5). A finished light request is escalated to the
heavy queue when the discriminator's percentile cut says so. Every ``replan_interval_s`` the
system's policy plans again; a GPU that changes model finishes its batch, then loads the new
model for ``swap_delay_s`` (serving nothing meanwhile). A policy with a ``check`` method is
also asked every ``check_interval_s`` whether to re-plan early (``hadis.core.surge``).

A plan with ``degrade`` set follows the router's overload rules (``hadis.core.routing``): a
request routed to a heavy tier that cannot finish it within the SLO goes to light instead, and
a light result is not escalated when the heavy tier cannot finish it within the request's
remaining deadline (both served, flagged degraded). With ``shed`` also set, a request neither
tier can finish within the SLO is refused on arrival (the router's 503); the replay has no
client retries, so a shed request is a violation. A tier's finish time is predicted from its
queue, its GPUs (busy, loading or on their way) and its batch time.

Every arrival ends exactly once: served (in time or late) or dropped (shed on arrival, or
dropped at dequeue). A violation is a drop or a completion later than the SLO.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from hadis.core.profile import Profile
from hadis.core.routing import after_light, entry_tier
from hadis.sim.data import IMAGES_PER_PROMPT, PromptData, Trace


@dataclass(frozen=True)
class ServingPlan:
    """What a system serves until its next re-plan.

    A cascade names ``light`` and ``heavy`` with the two shares; otherwise ``mixture`` gives
    each model's share of arrivals (one model at 1.0 for single-model systems).
    """

    gpus: Mapping[str, int]
    batch: Mapping[str, int]
    light: str | None = None
    heavy: str | None = None
    router_ratio: float = 0.0
    disc_ratio: float = 0.0
    mixture: Mapping[str, float] | None = None
    quality: float = math.nan
    label: str = ""
    feasible: bool = True
    degrade: bool = False  # the router's overload rules: light instead of a saturated heavy tier
    shed: bool = False  # ... and refuse a request neither tier can finish within the SLO

    @property
    def is_cascade(self) -> bool:
        return self.light is not None and self.heavy is not None and self.mixture is None


@dataclass(frozen=True)
class Observation:
    """What a policy sees at a re-plan: recent arrivals (per-second bins) and queues."""

    now: float
    arrival_bins: list[int]
    bin_s: float
    queues: Mapping[str, int]
    waiting: int
    current: ServingPlan | None
    history: Sequence[int] = ()  # arrivals per second since the start (the last may be partial)
    gpus: Mapping[str, int] = field(default_factory=dict)  # GPUs per model now (incl. loading)


Policy = Callable[[Observation], ServingPlan]


@dataclass
class Request:
    id: int
    arrival: float
    prompt: int
    image: int
    plan_id: int
    role: str  # "light", "heavy" or "single"
    path: str = ""  # "L" light accepted, "LH" escalated, "H" straight to heavy, "M" single model
    model: str = ""
    done: float = math.nan
    dropped: bool = False
    shed: bool = False  # refused on arrival (the router's 503)
    degraded: bool = False  # served light instead of heavy because heavy was saturated


@dataclass
class Gpu:
    model: str
    busy_until: float = 0.0
    ready_at: float = 0.0  # after a model swap
    target: str | None = None  # model to load once the current batch ends
    since: float = 0.0


@dataclass
class SimResult:
    requests: list[Request]
    plans: list[tuple[float, ServingPlan]]
    gpu_seconds: dict[str, float]
    swaps: int
    end_time: float
    early_replans: int = 0
    log: list[str] = field(default_factory=list)


class Simulation:
    ARRIVAL, FREE, REPLAN, READY, CHECK = 0, 1, 2, 3, 4

    def __init__(
        self,
        trace: Trace,
        prompts: PromptData,
        profile: Profile,
        policy: Policy,
        *,
        total_gpus: int,
        slo_s: float,
        replan_interval_s: float,
        swap_delay_s: Callable[[str], float] | float = 0.0,
        drop_factor: float = 1.5,
        mixture_seed: int = 0,
        check_interval_s: float = 1.0,
    ):
        self.trace = trace
        self.prompts = prompts
        self.profile = profile
        self.policy = policy
        self.total_gpus = total_gpus
        self.slo = slo_s
        self.interval = replan_interval_s
        self.swap_delay = swap_delay_s if callable(swap_delay_s) else (lambda _m, s=swap_delay_s: s)
        self.drop_after = drop_factor * slo_s
        self.seed = mixture_seed
        self.check_interval = check_interval_s
        self.early_replans = 0
        self.queues: dict[str, deque[Request]] = {m: deque() for m in profile.names}
        self.gpus: list[Gpu] = []
        self.events: list[tuple[float, int, int, int]] = []
        self.seq = 0
        self.plans: list[tuple[float, ServingPlan]] = []
        self.plan: ServingPlan | None = None
        self.requests: list[Request] = []
        self.gpu_seconds = {m: 0.0 for m in profile.names}
        self.swaps = 0
        self.bin_counts: list[int] = []
        self.now = 0.0
        self._latency_cache: dict[tuple[str, int], float] = {}

    # ------------------------------------------------------------------ helpers
    def _push(self, t: float, kind: int, arg: int = 0) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, kind, self.seq, arg))

    def batch_seconds(self, model: str, n: int) -> float:
        key = (model, n)
        s = self._latency_cache.get(key)
        if s is None:
            s = self.profile.model(model).batch_latency(n)
            if s is None:  # an unplanned size: time it as the smallest feasible size above it
                feas = [(b, t) for b, t in self.profile.feasible_batches(model) if b >= n]
                s = feas[0][1] if feas else math.inf
            self._latency_cache[key] = s
        return s

    def _target_model(self, model: str) -> str:
        """Where work for ``model`` goes: itself if it has GPUs, else the model with most GPUs."""
        assert self.plan is not None
        if self.plan.gpus.get(model, 0) > 0:
            return model
        return max(self.plan.gpus, key=lambda m: self.plan.gpus[m])

    # ------------------------------------------------------------------ planning
    def _observe(self) -> Observation:
        bins = max(1, round(self.interval))
        counts = self.bin_counts[-bins:]
        waiting = sum(len(q) for q in self.queues.values())
        gpus: dict[str, int] = {}
        for gpu in self.gpus:
            m = gpu.target or gpu.model
            gpus[m] = gpus.get(m, 0) + 1
        queues = {m: len(q) for m, q in self.queues.items()}
        return Observation(self.now, list(counts), 1.0, queues, waiting, self.plan, self.bin_counts, gpus)

    def _close_bins(self) -> None:
        """Count every second up to now, with no arrival or not, before a policy looks."""
        while len(self.bin_counts) < int(self.now):
            self.bin_counts.append(0)

    def predicted_finish(self, model: str) -> float:
        """Seconds until one more request for ``model`` would be done.

        The queue ahead of it is cut into batches of the plan's size and each batch goes to the
        GPU that frees up first: a busy GPU when its batch ends, a loading one when its load
        ends (a GPU on its way to the model after its batch: then, plus the load time).
        Stops counting past ``drop_factor`` x SLO: the answer is then "too late" (inf)."""
        assert self.plan is not None
        free: list[float] = []
        for idx, gpu in enumerate(self.gpus):
            busy = gpu.busy_until if idx in self._in_flight else self.now
            if gpu.model == model and gpu.target is None:
                free.append(max(self.now, busy, gpu.ready_at))
            elif gpu.target == model:
                free.append(max(self.now, busy) + self.swap_delay(model))
        if not free:
            return math.inf
        heapq.heapify(free)
        cap = max(1, int(self.plan.batch.get(model, 1)))
        seconds = self.batch_seconds(model, cap)
        horizon = self.now + self.drop_after
        for _ in range(len(self.queues[model]) // cap):
            t = heapq.heappop(free) + seconds
            if t > horizon:
                return math.inf
            heapq.heappush(free, t)
        return free[0] + seconds - self.now

    def _apply(self, plan: ServingPlan) -> None:
        if sum(plan.gpus.values()) > self.total_gpus:
            raise ValueError(f"plan uses {sum(plan.gpus.values())} GPUs > budget {self.total_gpus}: {plan.label}")
        self.plan = plan
        self.plans.append((self.now, plan))
        if not self.gpus:
            for m, g in plan.gpus.items():
                self.gpus.extend(Gpu(model=m, since=self.now) for _ in range(g))
            return
        # Keep GPUs on their model where the new plan still wants them; move the rest.
        want = dict(plan.gpus)
        movable: list[Gpu] = []
        for gpu in self.gpus:
            current = gpu.target or gpu.model
            if want.get(current, 0) > 0:
                want[current] -= 1
            else:
                movable.append(gpu)
        for gpu in movable:
            dest = next((m for m, n in want.items() if n > 0), None)
            if dest is None:
                break
            want[dest] -= 1
            self._start_swap(gpu, dest)
        # Requests queued for models that lost all their GPUs move to the model of their role.
        for m, q in self.queues.items():
            if q and plan.gpus.get(m, 0) == 0:
                while q:
                    r = q.popleft()
                    if r.role == "heavy" and plan.heavy:
                        dest = plan.heavy
                    elif r.role == "light" and plan.light:
                        dest = plan.light
                    else:
                        dest = m
                    self.queues[self._target_model(dest)].append(r)
        for m in self.queues:
            self._dispatch(m)

    def _start_swap(self, gpu: Gpu, dest: str) -> None:
        if gpu.model == dest:
            gpu.target = None
            return
        self.swaps += 1
        if self.gpus.index(gpu) in self._in_flight:
            gpu.target = dest  # switch after the running batch
            return
        self._swap_now(gpu, dest)

    def _swap_now(self, gpu: Gpu, dest: str) -> None:
        self.gpu_seconds[gpu.model] += self.now - gpu.since
        gpu.model, gpu.since, gpu.target = dest, self.now, None
        gpu.ready_at = self.now + self.swap_delay(dest)
        self._push(gpu.ready_at, self.READY, self.gpus.index(gpu))

    # ------------------------------------------------------------------ serving
    def _arrive(self, i: int) -> None:
        assert self.plan is not None
        prompt = int(self.trace.prompt[i])
        req = Request(
            id=i,
            arrival=self.now,
            prompt=prompt,
            image=i % IMAGES_PER_PROMPT,
            plan_id=len(self.plans) - 1,
            role="single",
        )
        self.requests.append(req)
        plan = self.plan
        if plan.is_cascade:
            assert plan.light and plan.heavy
            entry = self._entry(plan, self.prompts.score_percentile(prompt))
            if entry == "shed":
                req.dropped, req.shed, req.done = True, True, self.now
                return
            if entry == "heavy":
                req.role, req.path, model = "heavy", "H", plan.heavy
            else:
                req.role, req.path, model = "light", "L", plan.light
                req.degraded = entry == "degrade"
        else:
            assert plan.mixture
            u = _unit(self.seed, i)
            acc, model = 0.0, next(iter(plan.mixture))
            for m, share in plan.mixture.items():
                acc += share
                model = m
                if u < acc:
                    break
            req.path = "M"
        target = self._target_model(model)
        self.queues[target].append(req)
        self._dispatch(target)

    def _entry(self, plan: ServingPlan, score_percentile: float) -> str:
        assert plan.light and plan.heavy
        if not plan.degrade:
            return entry_tier(score_percentile, plan.router_ratio, True, True)
        heavy = self._target_model(plan.heavy)
        light = self._target_model(plan.light)
        heavy_in_time = plan.router_ratio > 0 and self.predicted_finish(heavy) <= self.slo
        light_in_time = not plan.shed or self.predicted_finish(light) <= self.slo
        return entry_tier(score_percentile, plan.router_ratio, heavy_in_time, light_in_time)

    def _dispatch(self, model: str) -> None:
        q = self.queues[model]
        if not q:
            return
        assert self.plan is not None
        cap = max(1, int(self.plan.batch.get(model, 1)))
        for idx, gpu in enumerate(self.gpus):
            if not q:
                return
            if gpu.model != model or gpu.target is not None or idx in self._in_flight or gpu.ready_at > self.now:
                continue
            batch: list[Request] = []
            while q and len(batch) < cap:
                expected = self.batch_seconds(model, min(cap, len(batch) + len(q)))
                r = q.popleft()
                if self.now - r.arrival + expected > self.drop_after:
                    r.dropped, r.done, r.model = True, self.now, model
                    continue
                batch.append(r)
            if not batch:
                continue
            seconds = self.batch_seconds(model, len(batch))
            gpu.busy_until = self.now + seconds
            self._in_flight[idx] = batch
            self._push(gpu.busy_until, self.FREE, idx)

    def _finish(self, idx: int) -> None:
        gpu = self.gpus[idx]
        batch = self._in_flight.pop(idx, [])
        model = gpu.model
        plan = self.plan
        assert plan is not None
        for r in batch:
            if (
                r.role == "light"
                and not r.degraded
                and plan.is_cascade
                and model == plan.light
                and plan.heavy
                and plan.gpus.get(plan.heavy, 0) > 0
            ):
                in_time = not plan.degrade or self.now - r.arrival + self.predicted_finish(plan.heavy) <= self.slo
                confidence = self.prompts.confidence_percentile(model, r.prompt, r.image)
                outcome = after_light(confidence, plan.disc_ratio, in_time)
                if outcome == "escalate":
                    r.role, r.path = "heavy", "LH"
                    self.queues[plan.heavy].append(r)
                    continue
                r.degraded = outcome == "degrade"
            r.done, r.model = self.now, model
        if gpu.target is not None:
            self._swap_now(gpu, gpu.target)
        self._dispatch(model)
        if plan.heavy:
            self._dispatch(plan.heavy)

    # ------------------------------------------------------------------ main loop
    def run(self) -> SimResult:
        self._in_flight: dict[int, list[Request]] = {}
        n = len(self.trace)
        arrivals = self.trace.arrival_s
        end_of_arrivals = float(arrivals[-1]) if n else 0.0
        self.now = 0.0
        self.bin_counts = []
        self._apply(self.policy(self._observe()))
        self._push(self.interval, self.REPLAN)
        check = getattr(self.policy, "check", None)
        if check is not None:
            self._push(self.check_interval, self.CHECK)
        i = 0
        while i < n or self.events:
            if i < n and (not self.events or arrivals[i] <= self.events[0][0]):
                self.now = float(arrivals[i])
                b = int(self.now)
                while len(self.bin_counts) <= b:
                    self.bin_counts.append(0)
                self.bin_counts[b] += 1
                self._arrive(i)
                i += 1
                continue
            t, kind, _, arg = heapq.heappop(self.events)
            self.now = t
            if kind == self.FREE:
                self._finish(arg)
            elif kind == self.READY:
                self._dispatch(self.gpus[arg].model)
            elif kind == self.CHECK:
                self._close_bins()
                if i < n or any(self.queues.values()):
                    early = check(self._observe())
                    if early is not None:
                        self.early_replans += 1
                        self._apply(early)
                    self._push(t + self.check_interval, self.CHECK)
            elif kind == self.REPLAN:
                self._close_bins()
                if i < n or any(self.queues.values()):
                    self._apply(self.policy(self._observe()))
                busy = i < n or any(self.queues.values()) or self._in_flight
                if busy and t <= end_of_arrivals + 4 * self.slo + self.interval:
                    self._push(t + self.interval, self.REPLAN)
        # Anything still queued (no GPU will ever take it) ends as dropped.
        for q in self.queues.values():
            while q:
                r = q.popleft()
                r.dropped, r.done = True, self.now
        for gpu in self.gpus:
            self.gpu_seconds[gpu.model] += self.now - gpu.since
            gpu.since = self.now
        return SimResult(self.requests, self.plans, self.gpu_seconds, self.swaps, self.now, self.early_replans)


def _unit(seed: int, i: int) -> float:
    """Deterministic uniform number for the i-th arrival (a 64-bit mix, no global RNG)."""
    x = (seed * 0x9E3779B97F4A7C15 + i * 0xBF58476D1CE4E5B9 + 1) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 31
    x = (x * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 29
    return (x & 0xFFFFFFFFFFFF) / float(1 << 48)
