"""What the batcher knows of its executors: slots, batches in flight, incarnations.

An executor runs its batches one after another, in the order they were sent, so
the batch at the head of its list started when the one before it finished (or
when it was sent, if the executor was idle). That is enough to tell, without any
message from the executor, how long its current backend call has been running:
the watchdog for hung backends needs nothing else.

When an executor hangs or dies it is taken down and a replacement started under
a new incarnation number; anything still arriving from the old incarnation is
recognised by its number and ignored.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from sidecar.core.fair_queue import Entry


@dataclass(slots=True)
class InFlight:
    batch_id: int
    entries: list[Entry]
    dispatched_at: float
    started_at: float | None  # None while it waits behind another batch


@dataclass(slots=True)
class _Executor:
    up: bool = True
    incarnation: int = 0
    batches: deque[InFlight] = field(default_factory=deque)


class ExecutorSlots:
    def __init__(self, executors: int, max_inflight: int) -> None:
        self._max_inflight = max_inflight
        self._execs = [_Executor() for _ in range(executors)]

    @property
    def up_count(self) -> int:
        return sum(e.up for e in self._execs)

    @property
    def inflight_counts(self) -> tuple[int, ...]:
        return tuple(len(e.batches) for e in self._execs)

    def any_inflight(self) -> bool:
        return any(e.batches for e in self._execs)

    def incarnation(self, executor: int) -> int:
        return self._execs[executor].incarnation

    def is_current(self, executor: int, incarnation: int) -> bool:
        return 0 <= executor < len(self._execs) and self._execs[executor].incarnation == incarnation

    def free_slot(self) -> int | None:
        """The least loaded executor that is up and has room (lowest id on ties)."""
        best: tuple[int, int] | None = None
        for i, e in enumerate(self._execs):
            if e.up and len(e.batches) < self._max_inflight and (best is None or len(e.batches) < best[0]):
                best = (len(e.batches), i)
        return None if best is None else best[1]

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

    def has_inflight(self, executor: int) -> bool:
        return bool(self._execs[executor].batches)

    def hung(self, now: float, timeout_s: float) -> list[int]:
        """Executors whose current batch has run for `timeout_s` or more."""
        return [
            i
            for i, e in enumerate(self._execs)
            if e.up and e.batches and e.batches[0].started_at is not None and now >= e.batches[0].started_at + timeout_s
        ]

    def next_hang_check(self, timeout_s: float) -> float:
        starts = [e.batches[0].started_at for e in self._execs if e.up and e.batches]
        return min((s + timeout_s for s in starts if s is not None), default=math.inf)

    def take_down(self, executor: int) -> tuple[int, list[InFlight]]:
        """Marks it down under a new incarnation; returns that and the batches it held."""
        e = self._execs[executor]
        held = list(e.batches)
        e.batches.clear()
        e.up = False
        e.incarnation += 1
        return e.incarnation, held

    def bring_up(self, executor: int) -> None:
        self._execs[executor].up = True

    def is_up(self, executor: int) -> bool:
        return self._execs[executor].up
