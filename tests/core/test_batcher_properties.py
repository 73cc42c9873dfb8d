"""Invariants of design.md, checked over random event sequences, under both dispatch policies.

A tiny shell drives the batcher the way the actor does: it fires the one armed
timer at its time before anything later happens, completes dispatched batches in
order per executor, brings replaced executors back or fails their loads, lets
hung ones return, and sometimes kills one. When the batcher turns FAILED it does
what the server does: whatever is still unanswered is answered (abandoned).

On every partial batch it checks that the policy's due time had come (rule 6),
and under eager-when-idle that no idle executor is left beside a queue.
"""

from __future__ import annotations

import math
from collections import deque

from hypothesis import event as note, given, settings
from hypothesis import strategies as st

from sidecar.core.batcher import (
    ArmTimer,
    Batcher,
    BatcherError,
    BatchLimits,
    Dispatch,
    DispatchBatch,
    Drain,
    Drained,
    ERROR,
    ExecutorDown,
    ExecutorFree,
    ExecutorLoadFailed,
    ExecutorReleased,
    ExecutorUp,
    FailRequests,
    Fatal,
    OffTable,
    ReplaceExecutor,
    RequestsAdmitted,
    State,
    TimerFired,
    TRANSITIONS,
    Withdraw,
)
from sidecar.core.executors import Phase
from sidecar.core.status import Code
from tests.factories import admitted, request

MAX_WAIT = 0.020

# One step of the scenario: (kind, time advance in ms, parameter)
steps = st.lists(
    st.tuples(
        st.sampled_from(
            ["arrive", "arrive", "arrive", "finish", "finish", "withdraw", "idle", "up", "down", "stale", "loadfail",
             "release"]
        ),
        st.integers(min_value=0, max_value=15),
        st.integers(min_value=0, max_value=12),
    ),
    max_size=60,
)
limits = st.builds(
    BatchLimits,
    max_batch_size=st.integers(1, 8),
    batch_timeout_s=st.sampled_from([0.0, 0.002, 0.005, 0.010]),
    executors=st.integers(1, 3),
    max_inflight_per_executor=st.integers(1, 2),
    backend_timeout_s=st.sampled_from([math.inf, 0.008, 0.030]),
    max_hung=st.integers(0, 3),
    reload_attempts=st.integers(1, 3),
    dispatch=st.sampled_from(Dispatch),
)


class Shell:
    def __init__(self, lim: BatchLimits, max_timeout_ms: int = 9, all_timed: bool = False) -> None:
        self.b = Batcher(lim)
        self.max_timeout_ms = max_timeout_ms
        self.all_timed = all_timed  # every request has a timeout (else one in three)
        self.lim = lim
        self.now = 0.0
        self.timer: float | None = None
        self.running: list[deque[tuple[int, tuple]]] = [deque() for _ in range(lim.executors)]
        self.started = [0.0] * lim.executors  # when each executor's head batch started
        self.incarnation = [0] * lim.executors
        self.replacing: set[int] = set()
        self.expiry: dict[tuple[int, int], float] = {}
        self.enqueued_at: dict[tuple[int, int], float] = {}
        self.draining = False
        self.answers: dict[tuple[int, int], list[str]] = {}
        self.in_batch: set[tuple[int, int]] = set()
        self.requeued: set[tuple[int, int]] = set()  # waited in a replaced executor's inbox
        self.log: list[str] = []
        self.next_id = 0
        self.drained = False
        self.fatal: list[str] = []

    def handle(self, event) -> None:
        # What a batch dispatched by this event may be made of (when each was queued):
        # what is queued, what arrives, and what a replaced executor held (a hung
        # one's waiting batches go back to the queue, before dispatch).
        could_go = [e.enqueued_at for e in self.b._queue]
        if isinstance(event, RequestsAdmitted):
            could_go += [self.now] * len(event.admitted.requests)
        if isinstance(event, Drain):
            self.draining = True
        actions = self.b.handle(event, self.now)
        self.log.append(repr(actions))
        assert not [a for a in actions if isinstance(a, OffTable)], actions
        for a in actions:
            match a:
                case DispatchBatch(executor, _, reqs):
                    assert 1 <= len(reqs) <= self.lim.max_batch_size
                    ahead = len(self.running[executor])
                    self.check_due(reqs, ahead, executor, could_go)
                    if ahead:  # behind other batches: each request must be able to finish from there
                        note("placed behind a running batch")
                        estimate = self.b.compute_estimate_s
                        start = self.now + max(0.0, ahead * estimate - (self.now - self.started[executor]))
                        for r in reqs:
                            assert r.deadline >= start + estimate - 1e-9, "placed in a slot it cannot finish from"
                    else:
                        self.started[executor] = self.now
                    for r in reqs:
                        assert self.now < self.expiry[r.key], "dispatched at or after its expiry"
                        self.in_batch.add(r.key)
                    self.running[executor].append((self.incarnation[executor], tuple(r.key for r in reqs)))
                case FailRequests(failures):
                    for r, f in failures:
                        self.answers[r.key].append(f.code.name)
                        if f.code is Code.DEADLINE_EXCEEDED and r.key not in self.in_batch | self.requeued:
                            assert self.now <= self.expiry[r.key] + 1e-9, "waited past its limit"
                        self.in_batch.discard(r.key)
                case ReplaceExecutor(executor, incarnation):
                    # the batcher failed or requeued what the executor held
                    could_go += [self.enqueued_at[k] for _, keys in self.running[executor] for k in keys]
                    for _, keys in self.running[executor]:
                        self.in_batch.difference_update(keys)
                        self.requeued.update(keys)
                    self.running[executor].clear()
                    self.incarnation[executor] = incarnation
                    self.replacing.add(executor)
                case ArmTimer(at):
                    self.timer = at
                case Drained():
                    self.drained = True
                case Fatal(reason):
                    self.fatal.append(reason)
                    note("fatal: " + ("hung cap" if "max-hung" in reason else "no instance can come back"))
                    # the server answers whatever is unanswered; late results are dropped
                    for queue in self.running:
                        for _, keys in queue:
                            for k in keys:
                                if not self.answers[k]:
                                    self.answers[k].append("ABANDONED")
                        queue.clear()
                    self.replacing.clear()
        for entry in self.b._queue:  # nothing still queued may be past its expiry
            assert entry.expires_at > self.now
        if self.b.executors_up == 0:  # with no executor up, nothing waits for one
            assert self.b.queue_depth == 0
        if self.lim.dispatch is Dispatch.EAGER_WHEN_IDLE and self.b.queue_depth:  # nor beside an idle one
            phases, inflight = self.b.executor_phases, self.b.inflight_batches
            idle = [i for i, (p, n) in enumerate(zip(phases, inflight)) if p is Phase.UP and not n]
            assert not idle, f"executors {idle} idle beside {self.b.queue_depth} queued"
        assert len(self.fatal) <= 1, self.fatal

    def check_due(self, reqs, ahead: int, executor: int, could_go: list[float]) -> None:
        """A partial batch leaves only when the policy says it is due (rule 6)."""
        lim, b, now = self.lim, self.b, self.now
        if self.draining or len(reqs) == lim.max_batch_size or len(could_go) >= lim.max_batch_size:
            return
        window_end = min(could_go) + lim.batch_timeout_s
        estimate = b.compute_estimate_s
        if ahead == 0:  # an idle executor
            if lim.dispatch is Dispatch.EAGER_WHEN_IDLE:
                note("eager: a partial batch to an idle executor")
                return
            note("window: a partial batch to an idle executor")
            urgent = any(r.deadline - estimate <= now for r in reqs)
            assert urgent or now >= window_end, "window: a partial batch left an idle executor early"
        elif lim.dispatch is Dispatch.EAGER_WHEN_IDLE and b._batches_timed:
            note("eager: into a busy executor's slot as it runs dry")
            runs_dry = self.started[executor] + ahead * estimate
            assert now >= runs_dry - 1e-9, "eager: a partial batch went behind a running one before it was due to end"
        else:
            note("a partial batch behind a running one, at its window")
            assert now >= window_end, "a partial batch went behind a running one before its window ended"

    def advance(self, dt: float) -> None:
        target = self.now + dt
        for _ in range(10_000):
            if self.timer is None or self.timer > target:
                self.now = target
                return
            self.now = max(self.now, self.timer)
            self.handle(TimerFired(self.timer))
        raise AssertionError(f"the timer keeps firing at {self.timer} without progress")

    def finish(self, executor: int, dt: float) -> None:
        incarnation, keys = self.running[executor].popleft()
        self.started[executor] = self.now
        for k in keys:
            self.answers[k].append("OK")
            self.in_batch.discard(k)
        self.handle(ExecutorFree(executor, incarnation, dt))

    def step(self, kind: str, dt_ms: int, n: int) -> None:
        self.advance(dt_ms / 1000)
        busy = [i for i, r in enumerate(self.running) if r]
        if kind == "arrive":
            reqs = []
            for i in range(n):
                timed = self.all_timed or i % 3 == 0
                timeout = 0.001 * (1 + (n + i) % self.max_timeout_ms) if timed else None
                r = request(self.next_id, stream=1 + i % 2, at=self.now, timeout=timeout)
                self.next_id += 1
                self.expiry[r.key] = min(r.deadline, self.now + MAX_WAIT)
                self.enqueued_at[r.key] = self.now
                self.answers[r.key] = []
                reqs.append(r)
            if reqs:
                self.handle(RequestsAdmitted(admitted(reqs, self.now, max_wait=MAX_WAIT)))
        elif kind == "finish" and busy:
            self.finish(busy[n % len(busy)], dt_ms / 1000)
        elif kind == "withdraw":
            keys = frozenset((1 + k % 2, k) for k in range(max(0, self.next_id - n), self.next_id))
            self.handle(Withdraw(keys, "client went away"))
        elif kind == "up" and self.replacing:
            executor = sorted(self.replacing)[n % len(self.replacing)]
            self.replacing.discard(executor)
            self.handle(ExecutorUp(executor, self.incarnation[executor]))
        elif kind == "down":
            executor = n % self.lim.executors
            self.handle(ExecutorDown(executor, self.incarnation[executor], "actor died"))
        elif kind == "stale":  # an old incarnation reports in late: ignored
            executor = n % self.lim.executors
            if self.incarnation[executor] > 0:
                self.handle(ExecutorFree(executor, self.incarnation[executor] - 1, 0.001))
        elif kind == "loadfail" and self.replacing:
            executor = sorted(self.replacing)[n % len(self.replacing)]
            self.replacing.discard(executor)
            self.handle(ExecutorLoadFailed(executor, self.incarnation[executor], "BackendError: no GPU"))
        elif kind == "release":  # some old incarnation's actor stops (a hung call returned, say)
            executor = n % self.lim.executors
            if self.incarnation[executor] > 0:
                self.handle(ExecutorReleased(executor, n % self.incarnation[executor]))

    def finish_everything(self) -> None:
        self.handle(Drain())
        for _ in range(10_000):
            if self.drained or self.fatal:
                return
            busy = [i for i, r in enumerate(self.running) if r]
            if busy:
                self.finish(busy[0], 0.001)
            elif self.replacing:
                executor = self.replacing.pop()
                self.handle(ExecutorUp(executor, self.incarnation[executor]))
            else:
                self.advance(1.0)
        raise AssertionError("never drained")


@settings(max_examples=300, deadline=None)
@given(limits, steps)
def test_every_request_gets_exactly_one_answer_and_limits_hold(lim, scenario):
    shell = Shell(lim)
    for kind, dt, n in scenario:
        shell.step(kind, dt, n)
    shell.finish_everything()
    assert (shell.drained and shell.b.state is State.CLOSED) or (shell.fatal and shell.b.state is State.FAILED)
    for key, answers in shell.answers.items():
        assert len(answers) == 1, (key, answers)


@settings(max_examples=200, deadline=None)
@given(
    st.builds(
        BatchLimits,
        max_batch_size=st.integers(1, 4),
        batch_timeout_s=st.sampled_from([0.0, 0.002]),
        executors=st.integers(1, 2),
        max_inflight_per_executor=st.integers(2, 3),
        dispatch=st.sampled_from(Dispatch),
    ),
    st.lists(
        st.tuples(st.sampled_from(["arrive", "arrive", "finish", "finish", "idle"]), st.integers(0, 6), st.integers(0, 12)),
        max_size=80,
    ),
    st.integers(2, 40),
)
def test_nothing_is_placed_into_a_slot_it_cannot_finish_from(lim, scenario, max_timeout_ms):
    # Every request has a deadline and batches take 0-6 ms, so slots behind a running
    # batch are often too late for some of the queue; the shell asserts the rule on
    # every DispatchBatch, and exactly one answer each.
    shell = Shell(lim, max_timeout_ms=max_timeout_ms, all_timed=True)
    for kind, dt, n in scenario:
        shell.step(kind, dt, n)
    shell.finish_everything()
    assert shell.drained
    for key, answers in shell.answers.items():
        assert len(answers) == 1, (key, answers)


@settings(max_examples=200, deadline=None)
@given(
    st.builds(
        BatchLimits,
        max_batch_size=st.integers(1, 6),
        batch_timeout_s=st.sampled_from([0.0, 0.002, 0.010]),
        executors=st.integers(1, 2),
        max_inflight_per_executor=st.integers(1, 3),
        dispatch=st.just(Dispatch.EAGER_WHEN_IDLE),
    ),
    st.lists(
        st.tuples(st.sampled_from(["arrive", "arrive", "finish", "idle"]), st.integers(0, 8), st.integers(0, 4)),
        min_size=30,  # long enough for a compute estimate and busy slots with a queue beside them
        max_size=80,
    ),
)
def test_eager_never_idles_beside_a_queue_and_holds_a_busy_slot_until_it_is_due(lim, scenario):
    # Small arrivals and batches of 0-8 ms, so executors often run dry, early or late
    # against the estimate, with requests queued beside them; the shell checks both
    # halves of the policy after every event.
    shell = Shell(lim)
    for kind, dt, n in scenario:
        shell.step(kind, dt, n)
    shell.finish_everything()
    assert shell.drained
    for key, answers in shell.answers.items():
        assert len(answers) == 1, (key, answers)


@settings(max_examples=150, deadline=None)
@given(limits, steps)
def test_same_events_give_the_same_batches(lim, scenario):
    logs = []
    for _ in range(2):
        shell = Shell(lim)
        for kind, dt, n in scenario:
            shell.step(kind, dt, n)
        shell.finish_everything()
        logs.append(shell.log)
    assert logs[0] == logs[1]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 40), min_size=2, max_size=6),  # requests queued per stream
    st.integers(1, 16),  # max batch size
)
def test_no_stream_gets_less_than_its_fair_share_while_it_has_work(loads, max_batch):
    b = Batcher(BatchLimits(max_batch, 0.0, executors=1, max_inflight_per_executor=1))
    reqs = [request(i * 1000 + j, stream=i + 1) for i, n in enumerate(loads) for j in range(n)]
    actions = b.handle(RequestsAdmitted(admitted(reqs, 0.0)), 0.0)
    queued = {i + 1: n for i, n in enumerate(loads)}
    t = 0.0
    while True:
        batches = [a for a in actions if isinstance(a, DispatchBatch)]
        for batch in batches:
            active = [s for s, n in queued.items() if n]
            share = max_batch // len(active)
            got = {s: sum(r.stream == s for r in batch.requests) for s in active}
            for s in active:
                assert got[s] >= min(queued[s], share), (s, got, queued, share)
            for s in active:
                queued[s] -= got[s]
        if not any(queued.values()):
            break
        t += 0.001
        actions = b.handle(ExecutorFree(0, 0, 0.001), t)


EVENT_KINDS = ("arrive", "timer", "free", "withdraw", "drain", "down", "up", "loadfail", "released")


def allowed(before: State, event) -> set:
    """The states the module's own table lets `event` lead to from `before` (its
    "error" for a refusal). In this shell time moves only on timer events, so the
    after-any-event rules (watchdog, fatal check) act only there, as the table shows."""
    return {"error" if to == ERROR else to for to in TRANSITIONS[(before, type(event))].to}


@settings(max_examples=300, deadline=None)
@given(
    limits,
    steps,
    st.booleans(),
    st.sampled_from(EVENT_KINDS),
    st.integers(0, 2),
)
def test_every_state_event_pair_is_legal_or_a_defined_error(lim, prefix, drain_first, kind, executor):
    shell = Shell(lim)
    for k, dt, n in prefix:
        shell.step(k, dt, n)
    if drain_first:
        shell.handle(Drain())
    before = shell.b.state
    snapshot = (shell.b.queue_depth, shell.b.inflight_batches)
    i = executor % lim.executors
    event = {
        "arrive": RequestsAdmitted(admitted([request(10_000, at=shell.now)], shell.now)),
        "timer": TimerFired(shell.now),
        "free": ExecutorFree(executor, shell.incarnation[i] if executor < lim.executors else 0, 0.001),
        "withdraw": Withdraw(frozenset({(1, 0), (2, 1)}), "gone"),
        "drain": Drain(),
        "down": ExecutorDown(i, shell.incarnation[i], "died"),
        "up": ExecutorUp(i, shell.incarnation[i]),
        "loadfail": ExecutorLoadFailed(i, shell.incarnation[i], "BackendError: no GPU"),
        "released": ExecutorReleased(i, max(0, shell.incarnation[i] - 1)),
    }[kind]
    try:
        shell.b.handle(event, shell.now)
        after = shell.b.state
    except BatcherError:
        after = "error"
        assert shell.b.state is before and (shell.b.queue_depth, shell.b.inflight_batches) == snapshot
    assert after in allowed(before, event), (before, kind, after)
