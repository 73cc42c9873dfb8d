"""What the batcher knows of its executors: slots, batches in flight, incarnations,
replacements and the instances given up on.

An executor runs its batches one after another, in the order they were sent, so
the batch at the head of its list started when the one before it finished (or
when it was sent, if the executor was idle). That is enough to tell, without any
message from the executor, how long its current backend call has been running:
the watchdog for hung backends needs nothing else. It is also enough to estimate
when a batch put behind the running one would start (`estimated_start`).

An instance is in one of four phases:

    UP        serving batches
    LOADING   a replacement is being made and loaded (in its own thread)
    WAITING   its last load failed; the next attempt is due at `retry_at`
    GIVEN_UP  `reload_attempts` loads in a row failed; it never comes back

Each replacement attempt runs under a new incarnation number; anything still
arriving from an old incarnation is recognised by its number and ignored.

An instance given up on as hung still holds a thread and a backend (on a GPU, a
context) until its backend call returns and its actor stops: those are `stuck`,
keyed by (executor, incarnation), until ExecutorReleased says otherwise.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from sidecar.core.fair_queue import Entry

# A failed replacement load is tried again after 0.5 s, then 1 s, 2 s, ... up to 30 s.
RELOAD_BACKOFF_S = 0.5
RELOAD_BACKOFF_MAX_S = 30.0


def reload_delay_s(failed_loads: int, base_s: float = RELOAD_BACKOFF_S, max_s: float = RELOAD_BACKOFF_MAX_S) -> float:
    """How long to wait before the next load, after `failed_loads` (>= 1) failed in a row."""
    if failed_loads < 1:
        raise ValueError(f"failed_loads must be >= 1, not {failed_loads}")
    return min(max_s, base_s * 2.0 ** min(failed_loads - 1, 64))


class Phase(Enum):
    UP = "UP"
    LOADING = "LOADING"
    WAITING = "WAITING"
    GIVEN_UP = "GIVEN_UP"


@dataclass(slots=True)
class InFlight:
    batch_id: int
    entries: list[Entry]
    dispatched_at: float
    started_at: float | None  # None while it waits behind another batch


@dataclass(slots=True)
class _Executor:
    phase: Phase = Phase.UP
    incarnation: int = 0
    batches: deque[InFlight] = field(default_factory=deque)
    failed_loads: int = 0  # in a row, since it last went down
    retry_at: float = math.inf  # WAITING: when the next load is due
    last_error: str = ""


class ExecutorSlots:
    def __init__(self, executors: int, max_inflight: int) -> None:
        self._max_inflight = max_inflight
        self._execs = [_Executor() for _ in range(executors)]
        self._stuck: set[tuple[int, int]] = set()  # (executor, incarnation) given up on as hung, not yet returned
        # Kept as phases change (in _set_phase only): read on every batcher step.
        self._up = executors
        self._waiting = 0

    def _set_phase(self, e: _Executor, phase: Phase) -> None:
        self._up += (phase is Phase.UP) - (e.phase is Phase.UP)
        self._waiting += (phase is Phase.WAITING) - (e.phase is Phase.WAITING)
        e.phase = phase

    # ---- queries ------------------------------------------------------------------------

    @property
    def up_count(self) -> int:
        return self._up

    @property
    def coming_back(self) -> int:
        """Instances not up now that may still come back (loading, or waiting to retry)."""
        return sum(e.phase in (Phase.LOADING, Phase.WAITING) for e in self._execs)

    @property
    def inflight_counts(self) -> tuple[int, ...]:
        return tuple(len(e.batches) for e in self._execs)

    @property
    def phases(self) -> tuple[Phase, ...]:
        return tuple(e.phase for e in self._execs)

    @property
    def stuck_count(self) -> int:
        return len(self._stuck)

    def any_inflight(self) -> bool:
        return any(e.batches for e in self._execs)

    def incarnation(self, executor: int) -> int:
        return self._execs[executor].incarnation

    def is_current(self, executor: int, incarnation: int) -> bool:
        return 0 <= executor < len(self._execs) and self._execs[executor].incarnation == incarnation

    def is_up(self, executor: int) -> bool:
        return self._execs[executor].phase is Phase.UP

    def is_loading(self, executor: int) -> bool:
        return self._execs[executor].phase is Phase.LOADING

    def has_inflight(self, executor: int) -> bool:
        return bool(self._execs[executor].batches)

    def failed_loads(self, executor: int) -> int:
        return self._execs[executor].failed_loads

    def last_error(self, executor: int) -> str:
        return self._execs[executor].last_error

    def free_slot(self) -> int | None:
        """The least loaded executor that is up and has room (lowest id on ties)."""
        best: tuple[int, int] | None = None
        for i, e in enumerate(self._execs):
            if e.phase is Phase.UP and len(e.batches) < self._max_inflight and (best is None or len(e.batches) < best[0]):
                best = (len(e.batches), i)
        return None if best is None else best[1]

    def estimated_start(self, executor: int, now: float, estimate_s: float) -> float:
        """When a batch sent to `executor` now would start: after the batches ahead of
        it (each about `estimate_s`), less what the running one has already run."""
        e = self._execs[executor]
        if not e.batches:
            return now
        head = e.batches[0].started_at
        ran = 0.0 if head is None else now - head
        return now + max(0.0, len(e.batches) * estimate_s - ran)

    def runs_dry_at(self, executor: int, estimate_s: float) -> float:
        """When `executor` is estimated to finish all it holds (each batch about
        `estimate_s`, from when its head batch started): `estimated_start` is
        max(now, this). The time itself, for the batcher's timer."""
        e = self._execs[executor]
        if not e.batches:
            return -math.inf
        head = e.batches[0].started_at
        if head is None:  # cannot happen: the head batch always has a start
            return math.inf
        return head + len(e.batches) * estimate_s

    def hung(self, now: float, timeout_s: float) -> list[int]:
        """Executors whose current batch has run for `timeout_s` or more."""
        return [
            i
            for i, e in enumerate(self._execs)
            if e.phase is Phase.UP
            and e.batches
            and e.batches[0].started_at is not None
            and now >= e.batches[0].started_at + timeout_s
        ]

    def next_hang_check(self, timeout_s: float) -> float:
        if timeout_s == math.inf:
            return math.inf
        starts = [e.batches[0].started_at for e in self._execs if e.phase is Phase.UP and e.batches]
        return min((s + timeout_s for s in starts if s is not None), default=math.inf)

    def next_reload(self) -> float:
        if not self._waiting:
            return math.inf
        return min((e.retry_at for e in self._execs if e.phase is Phase.WAITING), default=math.inf)

    def due_reloads(self, now: float) -> list[int]:
        if not self._waiting:
            return []
        return [i for i, e in enumerate(self._execs) if e.phase is Phase.WAITING and e.retry_at <= now]

    # ---- batches ------------------------------------------------------------------------

    def dispatch(self, executor: int, batch: InFlight, now: float) -> None:
        e = self._execs[executor]
        if not e.batches:
            batch.started_at = now
        e.batches.append(batch)

    def finish(self, executor: int, now: float) -> InFlight:
        """The executor's head batch is done; the next one starts now."""
        e = self._execs[executor]
        done = e.batches.popleft()
        if e.batches:
            e.batches[0].started_at = now
        return done

    # ---- going down and coming back -----------------------------------------------------

    def take_down(self, executor: int, *, hung: bool) -> tuple[int, list[InFlight]]:
        """Marks it down and loading a replacement under a new incarnation; returns that
        and the batches it held. A hung one is counted stuck until it is released."""
        e = self._execs[executor]
        held = list(e.batches)
        e.batches.clear()
        if hung:
            self._stuck.add((executor, e.incarnation))
        self._set_phase(e, Phase.LOADING)
        e.failed_loads = 0
        e.incarnation += 1
        return e.incarnation, held

    def bring_up(self, executor: int) -> None:
        e = self._execs[executor]
        self._set_phase(e, Phase.UP)
        e.failed_loads, e.retry_at = 0, math.inf

    def load_failed(self, executor: int, now: float, attempts: int, error: str) -> float | None:
        """The current load failed: when the next is due, or None if it was the last."""
        e = self._execs[executor]
        e.failed_loads += 1
        e.last_error = error
        if e.failed_loads >= attempts:
            self._set_phase(e, Phase.GIVEN_UP)
            e.retry_at = math.inf
            return None
        self._set_phase(e, Phase.WAITING)
        e.retry_at = now + reload_delay_s(e.failed_loads)
        return e.retry_at

    def start_reload(self, executor: int) -> tuple[int, int]:
        """A WAITING executor's next load begins: (new incarnation, attempt number)."""
        e = self._execs[executor]
        self._set_phase(e, Phase.LOADING)
        e.retry_at = math.inf
        e.incarnation += 1
        return e.incarnation, e.failed_loads + 1

    def release(self, executor: int, incarnation: int) -> bool:
        """That incarnation's actor has stopped: if it was stuck, it no longer is."""
        if (executor, incarnation) in self._stuck:
            self._stuck.discard((executor, incarnation))
            return True
        return False
