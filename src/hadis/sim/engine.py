"""Discrete-event replay of a trace through routing, worker queues and re-planning.

Per arrival: route (router percentile cut) to the light or heavy model, or for systems without
a cascade to one model by its share, and queue it by the system's dispatch rule:

- ``model-queue``: one FIFO per model, shared by its GPUs, a GPU taking its batch when it is
  free: our router's late binding (``hadis.router.holding``: an image waits at the router until
  a pod has a free slot), and the rule ``hadis`` is replayed with;
- ``random-worker``: one FIFO per GPU, the GPU drawn uniformly among those of the model; a GPU
  that changes model keeps its queue (the HADIS artifact: ``load_balancer.py`` equal routing
  tables, ``worker.py`` random choice, the queue lives in the worker);
- ``least-in-flight``: one FIFO per GPU (a worker pod's Triton queue), the GPU with the fewest
  requests queued or running among the ready ones (our router's ``EndpointPool`` over the
  EndpointSlices with ``holdRequests: false``: every image sent on at once); a GPU that
  changes model finishes its running batch and returns what waits at it to the router, which
  sends it on (in a cluster the terminating pod would drain it instead, up to its drain time:
  the fidelity table in docs/simulator.md counts this a departure).

A free GPU takes up to its plan's batch size from its queue, dropping at dequeue any request
whose elapsed time plus the expected batch time exceeds the plan's ``drop_factor`` x SLO
(HADIS's rule, 1.5; the artifact's Clipper-Heavy 1.0). A finished light request is escalated
to the heavy model when the discriminator's percentile cut says so. Every
``replan_interval_s`` the system's policy plans again; a GPU that changes model finishes its
batch, then loads the new model for ``swap_delay_s`` (serving nothing meanwhile). A policy
with a ``check`` method is also asked every ``check_interval_s`` whether to re-plan early.

``timing`` says how a batch is charged: ``profile`` (the profile's latency, interpolated for a
partial batch) or ``artifact`` (the artifact's simulated worker, ``worker/model.py``: sizes 3,
5, 6 and 7 interpolated from its table, any other size outside 1-8, 16, 32 timed as a batch of
4, and 10 ms of discriminator per batch).

A plan with ``degrade`` set follows the router's overload rules (``hadis.core.routing``); with
``shed`` also set, a request light cannot finish within the SLO goes to heavy if heavy can
(``overflow``), and one neither tier can finish is refused on arrival.

Every second the engine records what a controller sees (``Sample``): requests in the system
(arrived and not finished; a dropped one stays until 2x SLO after its arrival, when the
artifact's controller times it out), arrivals at each model's workers that second (a request
sent straight to heavy counts at light too: the artifact's light worker forwards it), and
requests waiting per model.

Every arrival ends exactly once: served (in time or late) or dropped (shed on arrival, or
dropped at dequeue). A violation is a drop or a completion later than the SLO.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from hadis.core.profile import Profile
from hadis.core.routing import after_light, entry_tier, routes_to_heavy
from hadis.sim.data import IMAGES_PER_PROMPT, PromptData, Trace

DISPATCH_MODES = ("model-queue", "random-worker", "least-in-flight")
TIMINGS = ("profile", "artifact")
DEFAULT_DROP_FACTOR = 1.5
RELEASED = ""  # the model of a GPU the plan does not use (given back: no GPU-seconds)
ARTIFACT_DISCRIMINATOR_S = 0.01  # worker/model.py: time.sleep(0.01) after every simulated batch
ARTIFACT_SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 16, 32)  # the sizes the artifact's worker times as such


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
    drop_factor: float = DEFAULT_DROP_FACTOR  # a worker starts a request it can finish by this x SLO

    @property
    def is_cascade(self) -> bool:
        return self.light is not None and self.heavy is not None and self.mixture is None


@dataclass(frozen=True)
class Sample:
    """One second of what a controller sees (taken at the end of second ``t``)."""

    t: int
    in_system: int
    arrivals: Mapping[str, int]
    queues: Mapping[str, int]


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
    samples: Sequence[Sample] = ()  # one per second since the start


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
    bound: str = ""  # the model it was queued for


@dataclass
class Gpu:
    model: str
    busy_until: float = 0.0
    ready_at: float = 0.0  # after a model swap
    target: str | None = None  # model to load once the current batch ends
    since: float = 0.0
    queue: deque[Request] = field(default_factory=deque)  # its own FIFO (per-worker dispatch)

    @property
    def heading(self) -> str:
        """The model it serves, or the one it is on its way to."""
        return self.model if self.target is None else self.target


@dataclass
class SimResult:
    requests: list[Request]
    plans: list[tuple[float, ServingPlan]]
    gpu_seconds: dict[str, float]
    swaps: int
    end_time: float
    early_replans: int = 0
    log: list[str] = field(default_factory=list)


def artifact_batch_seconds(latency: Callable[[int], float | None], n: int) -> float | None:
    """The artifact's simulated batch time (``config.get_model_runtimes``, ``executeBatch``).

    Sizes 1, 2, 4, 8, 16, 32 come from the table; 3, 5, 6 and 7 are the means of (2, 4),
    (2, 8), (4, 8) and (6, 8); any other size is timed as a batch of 4."""
    if n not in ARTIFACT_SIZES:
        n = 4
    mid = {3: (2, 4), 5: (2, 8), 6: (4, 8), 7: (6, 8)}
    if n in mid:
        lo, hi = mid[n]
        a, b = artifact_batch_seconds(latency, lo), artifact_batch_seconds(latency, hi)
        return None if a is None or b is None else (a + b) / 2
    return latency(n)


class Simulation:
    ARRIVAL, FREE, TICK, REPLAN, READY, CHECK = 0, 1, 2, 3, 4, 5  # same-time events in this order

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
        mixture_seed: int = 0,
        check_interval_s: float = 1.0,
        dispatch: str = "model-queue",
        timing: str = "profile",
    ):
        if dispatch not in DISPATCH_MODES:
            raise ValueError(f"unknown dispatch '{dispatch}' (known: {', '.join(DISPATCH_MODES)})")
        if timing not in TIMINGS:
            raise ValueError(f"unknown timing '{timing}' (known: {', '.join(TIMINGS)})")
        self.trace = trace
        self.prompts = prompts
        self.profile = profile
        self.policy = policy
        self.total_gpus = total_gpus
        self.slo = slo_s
        self.interval = replan_interval_s
        self.swap_delay = swap_delay_s if callable(swap_delay_s) else (lambda _m, s=swap_delay_s: s)
        self.seed = mixture_seed
        self.rng = random.Random(mixture_seed)
        self.check_interval = check_interval_s
        self.dispatch = dispatch
        self.per_worker = dispatch != "model-queue"
        self.hands_back = dispatch == "least-in-flight"  # a GPU leaving its model returns its queue
        self.timing = timing
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
        self.samples: list[Sample] = []
        self.now = 0.0
        self._turn = 0
        self._latency_cache: dict[tuple[str, int], float] = {}
        self._in_flight: dict[int, list[Request]] = {}
        self._served = 0
        self._drop_expiry: list[float] = []  # when each dropped request leaves the in-system count
        self._expired = 0
        self._arrivals_now: dict[str, int] = {}

    # ------------------------------------------------------------------ helpers
    def _push(self, t: float, kind: int, arg: int = 0) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, kind, self.seq, arg))

    def batch_seconds(self, model: str, n: int) -> float:
        key = (model, n)
        s = self._latency_cache.get(key)
        if s is None:
            curve = self.profile.model(model).batch_latency
            if self.timing == "artifact":
                t = artifact_batch_seconds(curve, n)
                s = math.inf if t is None else t + ARTIFACT_DISCRIMINATOR_S
            else:
                s = curve(n)
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

    def _drop_after(self) -> float:
        assert self.plan is not None
        return self.plan.drop_factor * self.slo

    # ------------------------------------------------------------------ planning
    def _observe(self) -> Observation:
        bins = max(1, round(self.interval))
        counts = self.bin_counts[-bins:]
        gpus: dict[str, int] = {}
        for gpu in self.gpus:
            m = gpu.heading
            if m != RELEASED:
                gpus[m] = gpus.get(m, 0) + 1
        queues = self._waiting_per_model()
        return Observation(
            self.now,
            list(counts),
            1.0,
            queues,
            sum(queues.values()),
            self.plan,
            self.bin_counts,
            gpus,
            self.samples,
        )

    def _waiting_per_model(self) -> dict[str, int]:
        """Requests waiting for each model: its shared queue, or its GPUs' own queues."""
        out = {m: len(q) for m, q in self.queues.items()}
        for gpu in self.gpus:
            if gpu.queue:
                assert gpu.model != RELEASED, "a released GPU holds no queue"
                out[gpu.model] = out.get(gpu.model, 0) + len(gpu.queue)
        return out

    def _close_bins(self) -> None:
        """Count every second up to now, with no arrival or not, before a policy looks."""
        while len(self.bin_counts) < int(self.now):
            self.bin_counts.append(0)

    def _sample(self) -> None:
        """The controller's view at the end of a second (see the module docstring)."""
        while self._drop_expiry and self._drop_expiry[0] <= self.now:
            heapq.heappop(self._drop_expiry)
            self._expired += 1
        in_system = len(self.requests) - self._served - self._expired
        self.samples.append(Sample(int(self.now), in_system, dict(self._arrivals_now), self._waiting_per_model()))
        self._arrivals_now = {}

    def _candidates(self, model: str) -> list[int]:
        """The GPUs a request for ``model`` may join: for random-worker those serving it or on
        their way to it; for least-in-flight those serving it and not leaving it, the ready ones
        first (the router sees ready endpoints). None: the router holds the request."""
        if self.dispatch == "random-worker":
            return [i for i, g in enumerate(self.gpus) if g.heading == model]
        cands = [i for i, g in enumerate(self.gpus) if g.model == model and g.target is None]
        ready = [i for i in cands if self.gpus[i].ready_at <= self.now]
        return ready or cands

    def _worker_finish(self, idx: int, model: str, extra: int) -> float:
        """When GPU ``idx`` would finish ``extra`` more requests queued behind its own queue."""
        gpu = self.gpus[idx]
        busy = gpu.busy_until if idx in self._in_flight else self.now
        start = max(self.now, busy, gpu.ready_at)
        if gpu.target == model:
            start = max(self.now, busy) + self.swap_delay(model)
        cap = max(1, int(self.plan.batch.get(model, 1))) if self.plan else 1
        batches = math.ceil((len(gpu.queue) + extra) / cap)
        return start + batches * self.batch_seconds(model, cap)

    def predicted_finish(self, model: str) -> float:
        """Seconds until one more request for ``model`` would be done.

        Shared queue: the queue ahead of it is cut into batches of the plan's size and each
        batch goes to the GPU that frees up first (a loading GPU when its load ends). Per-GPU
        queues: the GPU the request would join finishes its queue, then the request. Stops
        counting past the drop horizon: the answer is then "too late" (inf)."""
        assert self.plan is not None
        if self.per_worker:
            cands = self._candidates(model)
            if not cands:
                return math.inf
            t = min(self._worker_finish(i, model, 1) for i in cands) - self.now
            return t if t <= self._drop_after() else math.inf
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
        horizon = self.now + self._drop_after()
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
            self.gpus.extend(Gpu(model=RELEASED) for _ in range(self.total_gpus - len(self.gpus)))
            return
        # Keep GPUs on their model where the new plan still wants them; move the rest.
        want = dict(plan.gpus)
        movable: list[Gpu] = []
        for gpu in self.gpus:
            current = gpu.heading
            if want.get(current, 0) > 0:
                want[current] -= 1
            else:
                movable.append(gpu)
        for gpu in movable:
            dest = next((m for m, n in want.items() if n > 0), RELEASED)
            if dest != RELEASED:
                want[dest] -= 1
            self._start_swap(gpu, dest)
        # Requests queued for models that lost all their GPUs move to the model of their role.
        for m, q in self.queues.items():
            if q and plan.gpus.get(m, 0) == 0:
                while q:
                    r = q.popleft()
                    self._enqueue(r, self._role_model(m, r))
        for m in self.profile.names:
            self._dispatch(m)

    def _role_model(self, model: str, req: Request) -> str:
        """The model of ``req``'s role in the current plan (``model`` for a single model)."""
        assert self.plan is not None
        if req.role == "heavy" and self.plan.heavy:
            return self.plan.heavy
        if req.role == "light" and self.plan.light:
            return self.plan.light
        return model

    def _hand_back(self, gpu: Gpu) -> None:
        """A GPU leaving its model returns what waits at it to the router, which sends it on."""
        queued, gpu.queue = gpu.queue, deque()
        for r in queued:
            self._enqueue(r, self._role_model(r.bound, r))

    def _start_swap(self, gpu: Gpu, dest: str) -> None:
        if gpu.model == dest:
            gpu.target = None
            return
        self.swaps += 1
        gpu.target = dest  # leaving: takes no more work for its model (switches after the running batch)
        if self.hands_back or dest == RELEASED:
            self._hand_back(gpu)
        if self.gpus.index(gpu) in self._in_flight:
            return
        self._swap_now(gpu, dest)

    def _swap_now(self, gpu: Gpu, dest: str) -> None:
        if gpu.model != RELEASED:
            self.gpu_seconds[gpu.model] += self.now - gpu.since
        gpu.model, gpu.since, gpu.target = dest, self.now, None
        if dest == RELEASED:  # given back: it costs nothing until a plan wants it again
            gpu.ready_at = self.now
            return
        gpu.ready_at = self.now + self.swap_delay(dest)
        self._push(gpu.ready_at, self.READY, self.gpus.index(gpu))

    # ------------------------------------------------------------------ serving
    def _count_arrival(self, model: str) -> None:
        self._arrivals_now[model] = self._arrivals_now.get(model, 0) + 1

    def _enqueue(self, req: Request, model: str) -> None:
        """Queue ``req`` for ``model`` (or where its work goes) by the dispatch rule."""
        target = self._target_model(model)
        req.bound = target
        self._count_arrival(target)
        if not self.per_worker:
            self.queues[target].append(req)
            self._dispatch(target)
            return
        cands = self._candidates(target)
        if not cands:  # every GPU of the model is still on its way: wait at the router
            self.queues[target].append(req)
            return
        if self.dispatch == "random-worker":
            idx = cands[self.rng.randrange(len(cands))]
        else:
            n = len(cands)
            self._turn = (self._turn + 1) % n
            order = cands[self._turn :] + cands[: self._turn]  # ties go round, as the router's
            idx = min(order, key=lambda i: len(self.gpus[i].queue) + len(self._in_flight.get(i, ())))
        self.gpus[idx].queue.append(req)
        self._try_start(idx)

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
                self._served += 1  # refused at once: never in the system
                return
            if entry in ("heavy", "overflow"):
                req.role, req.path, model = "heavy", "H", plan.heavy
                self._count_arrival(self._target_model(plan.light))  # the light worker forwards it
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
        self._enqueue(req, model)

    def _entry(self, plan: ServingPlan, score_percentile: float) -> str:
        assert plan.light and plan.heavy
        if not plan.degrade:
            return entry_tier(score_percentile, plan.router_ratio, True, True)
        heavy = self._target_model(plan.heavy)
        light = self._target_model(plan.light)
        light_in_time = not plan.shed or self.predicted_finish(light) <= self.slo
        asks_heavy = routes_to_heavy(score_percentile, plan.router_ratio) or not light_in_time
        heavy_in_time = asks_heavy and self.predicted_finish(heavy) <= self.slo
        return entry_tier(score_percentile, plan.router_ratio, heavy_in_time, light_in_time)

    def _dispatch(self, model: str) -> None:
        """Start a batch on every idle GPU of ``model`` that has work."""
        if not self.per_worker and not self.queues[model]:
            return
        for idx, gpu in enumerate(self.gpus):
            if gpu.model == model:
                self._try_start(idx)

    def _drop(self, r: Request, model: str) -> None:
        r.dropped, r.done, r.model = True, self.now, model
        heapq.heappush(self._drop_expiry, max(self.now, r.arrival + 2 * self.slo))

    def _try_start(self, idx: int) -> None:
        gpu = self.gpus[idx]
        if idx in self._in_flight or gpu.ready_at > self.now or gpu.target is not None or gpu.model == RELEASED:
            return
        model = gpu.model
        q = gpu.queue if self.per_worker else self.queues[model]
        if not q and self.per_worker:
            q = self.queues[model]  # what the router held while no GPU of the model was up
        if not q:
            return
        assert self.plan is not None
        cap = max(1, int(self.plan.batch.get(model, 1)))
        drop_after = self._drop_after()
        batch: list[Request] = []
        while q and len(batch) < cap:
            expected = self.batch_seconds(model, min(cap, len(batch) + len(q)))
            r = q.popleft()
            if self.now - r.arrival + expected > drop_after:
                self._drop(r, model)
                continue
            batch.append(r)
        if not batch:
            return
        gpu.busy_until = self.now + self.batch_seconds(model, len(batch))
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
                    self._enqueue(r, plan.heavy)
                    continue
                r.degraded = outcome == "degrade"
            r.done, r.model = self.now, model
            self._served += 1
        if gpu.target is not None:
            self._swap_now(gpu, gpu.target)
        self._try_start(idx)
        if not self.per_worker:
            self._dispatch(model)
            if plan.heavy:
                self._dispatch(plan.heavy)

    def _any_waiting(self) -> bool:
        return any(self.queues.values()) or any(g.queue for g in self.gpus)

    # ------------------------------------------------------------------ main loop
    def run(self) -> SimResult:
        n = len(self.trace)
        arrivals = self.trace.arrival_s
        end_of_arrivals = float(arrivals[-1]) if n else 0.0
        self.now = 0.0
        self.bin_counts = []
        self._apply(self.policy(self._observe()))
        self._push(self.interval, self.REPLAN)
        self._push(1.0, self.TICK)
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
                if self.per_worker:
                    self._try_start(arg)
                else:
                    self._dispatch(self.gpus[arg].model)
            elif kind == self.TICK:
                self._sample()
                if i < n or self._any_waiting() or self._in_flight:
                    self._push(t + 1.0, self.TICK)
            elif kind == self.CHECK:
                self._close_bins()
                if i < n or self._any_waiting():
                    early = check(self._observe())
                    if early is not None:
                        self.early_replans += 1
                        self._apply(early)
                    self._push(t + self.check_interval, self.CHECK)
            elif kind == self.REPLAN:
                self._close_bins()
                if i < n or self._any_waiting():
                    self._apply(self.policy(self._observe()))
                busy = i < n or self._any_waiting() or self._in_flight
                if busy and t <= end_of_arrivals + 4 * self.slo + self.interval:
                    self._push(t + self.interval, self.REPLAN)
        # Anything still queued (no GPU will ever take it) ends as dropped.
        for q in [*self.queues.values(), *(g.queue for g in self.gpus)]:
            while q:
                r = q.popleft()
                r.dropped, r.done = True, self.now
        for gpu in self.gpus:
            if gpu.model != RELEASED:
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
