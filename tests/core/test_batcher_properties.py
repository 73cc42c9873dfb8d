"""Invariants of design.md, checked over random event sequences.

A tiny shell drives the batcher the way the actor does: it fires the one armed
timer at its time before anything later happens, and completes dispatched batches.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core.batcher import (
    ArmTimer,
    Batcher,
    BatcherError,
    BatchLimits,
    DispatchBatch,
    Drain,
    Drained,
    ExecutorFree,
    FailRequests,
    RequestsAdmitted,
    State,
    TimerFired,
    Withdraw,
)
from sidecar.core.status import Code
from tests.factories import admitted, request

# One step of the scenario: (kind, time advance in ms, parameter)
steps = st.lists(
    st.tuples(
        st.sampled_from(["arrive", "arrive", "arrive", "finish", "withdraw", "idle"]),
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
)


class Shell:
    def __init__(self, lim: BatchLimits) -> None:
        self.b = Batcher(lim)
        self.lim = lim
        self.now = 0.0
        self.timer: float | None = None
        self.running: list[int] = []  # executor of each in-flight batch, oldest first
        self.expiry: dict[tuple[int, int], float] = {}
        self.outcomes: dict[tuple[int, int], list[str]] = {}
        self.log: list[str] = []
        self.next_id = 0
        self.drained = False

    def handle(self, event) -> None:
        actions = self.b.handle(event, self.now)
        self.log.append(repr(actions))
        for a in actions:
            match a:
                case DispatchBatch(executor, _, reqs, _):
                    assert 1 <= len(reqs) <= self.lim.max_batch_size
                    for r in reqs:
                        assert self.now < self.expiry[r.key], "dispatched at or after its expiry"
                        self.outcomes[r.key].append("dispatched")
                    self.running.append(executor)
                case FailRequests(failures):
                    for r, f in failures:
                        self.outcomes[r.key].append(f.code.name)
                        if f.code is Code.DEADLINE_EXCEEDED:
                            assert math.isclose(self.now, self.expiry[r.key], abs_tol=1e-9), "waited past its limit"
                case ArmTimer(at):
                    self.timer = at
                case Drained():
                    self.drained = True
        for entry in self.b._queue.values():  # nothing still queued may be past its expiry
            assert entry.expires_at > self.now

    def advance(self, dt: float) -> None:
        target = self.now + dt
        while self.timer is not None and self.timer <= target:
            self.now = max(self.now, self.timer)
            self.handle(TimerFired(self.timer))
        self.now = target

    def step(self, kind: str, dt_ms: int, n: int) -> None:
        self.advance(dt_ms / 1000)
        if kind == "arrive":
            reqs = []
            for i in range(n):
                timeout = None if i % 3 else 0.001 * (1 + (n + i) % 9)
                r = request(self.next_id, stream=1 + i % 2, at=self.now, timeout=timeout)
                self.next_id += 1
                self.expiry[r.key] = min(r.deadline, self.now + 0.020)
                self.outcomes[r.key] = []
                reqs.append(r)
            if reqs:
                self.handle(RequestsAdmitted(admitted(reqs, self.now, max_wait=0.020)))
        elif kind == "finish" and self.running:
            self.handle(ExecutorFree(self.running.pop(0), dt_ms / 1000))
        elif kind == "withdraw":
            keys = frozenset((1 + k % 2, k) for k in range(max(0, self.next_id - n), self.next_id))
            self.handle(Withdraw(keys, "client went away"))

    def finish_everything(self) -> None:
        self.handle(Drain())
        while self.running or self.b.queue_depth:
            if self.running:
                self.handle(ExecutorFree(self.running.pop(0), 0.001))
            else:
                self.advance(1.0)


@settings(max_examples=300, deadline=None)
@given(limits, steps)
def test_every_request_gets_exactly_one_outcome_and_limits_hold(lim, scenario):
    shell = Shell(lim)
    for kind, dt, n in scenario:
        shell.step(kind, dt, n)
    shell.finish_everything()
    assert shell.drained and shell.b.state is State.CLOSED
    for key, outcomes in shell.outcomes.items():
        assert len(outcomes) == 1, (key, outcomes)


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


ALLOWED = {
    # (state before, event kind) -> states it may lead to; "error" = BatcherError
    (State.IDLE, "arrive"): {State.IDLE, State.COLLECTING},
    (State.IDLE, "timer"): {State.IDLE},
    (State.IDLE, "free"): {State.IDLE, "error"},
    (State.IDLE, "withdraw"): {State.IDLE},
    (State.IDLE, "drain"): {State.DRAINING, State.CLOSED},
    (State.COLLECTING, "arrive"): {State.IDLE, State.COLLECTING},
    (State.COLLECTING, "timer"): {State.IDLE, State.COLLECTING},
    (State.COLLECTING, "free"): {State.IDLE, State.COLLECTING, "error"},
    (State.COLLECTING, "withdraw"): {State.IDLE, State.COLLECTING},
    (State.COLLECTING, "drain"): {State.DRAINING, State.CLOSED},
    (State.DRAINING, "arrive"): {State.DRAINING},
    (State.DRAINING, "timer"): {State.DRAINING, State.CLOSED},
    (State.DRAINING, "free"): {State.DRAINING, State.CLOSED, "error"},
    (State.DRAINING, "withdraw"): {State.DRAINING, State.CLOSED},
    (State.DRAINING, "drain"): {State.DRAINING},
    (State.CLOSED, "arrive"): {State.CLOSED},
    (State.CLOSED, "timer"): {State.CLOSED},
    (State.CLOSED, "free"): {"error"},
    (State.CLOSED, "withdraw"): {State.CLOSED},
    (State.CLOSED, "drain"): {State.CLOSED},
}


@settings(max_examples=300, deadline=None)
@given(limits, steps, st.booleans(), st.sampled_from(["arrive", "timer", "free", "withdraw", "drain"]), st.integers(0, 2))
def test_every_state_event_pair_is_legal_or_a_defined_error(lim, prefix, drain_first, kind, executor):
    shell = Shell(lim)
    for k, dt, n in prefix:
        shell.step(k, dt, n)
    if drain_first:
        shell.handle(Drain())
    before = shell.b.state
    snapshot = (shell.b.queue_depth, shell.b.inflight_batches)
    event = {
        "arrive": RequestsAdmitted(admitted([request(10_000, at=shell.now)], shell.now)),
        "timer": TimerFired(shell.now),
        "free": ExecutorFree(executor, 0.001),
        "withdraw": Withdraw(frozenset({(1, 0), (2, 1)}), "gone"),
        "drain": Drain(),
    }[kind]
    try:
        shell.b.handle(event, shell.now)
        after = shell.b.state
    except BatcherError:
        after = "error"
        assert shell.b.state is before and (shell.b.queue_depth, shell.b.inflight_batches) == snapshot
    assert after in ALLOWED[(before, kind)], (before, kind, after)
