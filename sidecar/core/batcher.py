"""Batcher: decides when, and what, to dispatch to the executors.

Everything that affects a transition lives in this module. The state is derived
from the queue and two flags, never stored on its own:

    IDLE        nothing queued, not draining
    COLLECTING  requests queued; waiting for a full batch, the window, or a free executor
    DRAINING    drain asked; queued requests go out as soon as executors have room
    CLOSED      drained: nothing queued, no batch in flight; the final state

Transition table (event -> next state; actions in brackets, D = DispatchBatch,
F = FailRequests; ArmTimer and QueueReleased follow any step that changes them):

    state \\ event  RequestsAdmitted     TimerFired          ExecutorFree        Withdraw        Drain
    IDLE           COLLECTING or IDLE   IDLE                IDLE                IDLE            DRAINING or CLOSED
                   [D]
    COLLECTING     COLLECTING or IDLE   COLLECTING or IDLE  COLLECTING or IDLE  COLLECTING or   DRAINING or CLOSED
                   [D]                  [D, F]              [D, F]              IDLE [F]        [D, F]
    DRAINING       DRAINING [D]         DRAINING or CLOSED  DRAINING or CLOSED  DRAINING or     DRAINING
                                        [D, F]              [D, F]              CLOSED [F]
    CLOSED         CLOSED [F]           CLOSED              BatcherError        CLOSED          CLOSED

Dispatch rule, applied after every event while an executor has a free slot:

    dispatch  =  draining  or  queued >= max_batch_size  or  now >= oldest.enqueued_at + window
                 or  now >= earliest expiry - estimated compute time

A request whose expiry (the earlier of admission + max queue wait and its own
deadline) has come is failed DEADLINE_EXCEEDED and never dispatched. An
ExecutorFree for an executor with no batch in flight is illegal: it raises
BatcherError and leaves the state as it was. See docs/architecture.md for the
diagram.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from enum import Enum
from itertools import islice

from sidecar.core.admission import Admitted
from sidecar.core.request import Request, RequestKey
from sidecar.core.status import Code, Failure

# Weight of the newest compute-time sample in the running estimate.
_ESTIMATE_SMOOTHING = 0.2


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_batch_size: int
    batch_timeout_s: float  # the window, counted from the oldest queued request
    executors: int
    max_inflight_per_executor: int


class State(Enum):
    IDLE = "IDLE"
    COLLECTING = "COLLECTING"
    DRAINING = "DRAINING"
    CLOSED = "CLOSED"


class BatcherError(RuntimeError):
    """An event that is illegal in the current state; the state is unchanged."""


# ---- events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestsAdmitted:
    admitted: Admitted


@dataclass(frozen=True, slots=True)
class TimerFired:
    at: float  # the time the timer was armed for (an ArmTimer's `at`)


@dataclass(frozen=True, slots=True)
class ExecutorFree:
    """A batch finished on `executor`, after `compute_s` seconds of backend time."""

    executor: int
    compute_s: float


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Remove these requests if still queued (their client has gone)."""

    keys: frozenset[RequestKey]
    reason: str


@dataclass(frozen=True, slots=True)
class Drain:
    pass


Event = RequestsAdmitted | TimerFired | ExecutorFree | Withdraw | Drain


# ---- actions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DispatchBatch:
    executor: int
    batch_id: int
    requests: tuple[Request, ...]
    enqueued_at: tuple[float, ...]  # per request, oldest first
    dispatched_at: float


@dataclass(frozen=True, slots=True)
class FailRequests:
    failures: tuple[tuple[Request, Failure], ...]


@dataclass(frozen=True, slots=True)
class ArmTimer:
    at: float | None  # None: disarm


@dataclass(frozen=True, slots=True)
class QueueReleased:
    """Requests that left the queue since start (dispatched, failed or withdrawn)."""

    total: int


@dataclass(frozen=True, slots=True)
class Drained:
    pass


Action = DispatchBatch | FailRequests | ArmTimer | QueueReleased | Drained


@dataclass(slots=True)
class _Entry:
    request: Request
    enqueued_at: float
    expires_at: float
    queue_deadline: float
    seq: int


class Batcher:
    def __init__(self, limits: BatchLimits) -> None:
        if limits.max_batch_size < 1 or limits.executors < 1 or limits.max_inflight_per_executor < 1:
            raise ValueError(f"batch size, executors and in-flight batches must be >= 1: {limits}")
        self._limits = limits
        # Insertion-ordered: iteration is FIFO. Keyed for O(1) withdrawal.
        self._queue: dict[RequestKey, _Entry] = {}
        # (expires_at, seq, key); entries that left the queue are skipped lazily.
        self._expiries: list[tuple[float, int, RequestKey]] = []
        self._seq = 0
        self._inflight = [0] * limits.executors
        self._draining = False
        self._closed = False
        self._released = 0
        self._reported_released = 0
        self._armed: float | None = None
        self._next_batch_id = 0
        self._estimate_s = 0.0

    # ---- queries ----------------------------------------------------------------------

    @property
    def state(self) -> State:
        if self._closed:
            return State.CLOSED
        if self._draining:
            return State.DRAINING
        return State.COLLECTING if self._queue else State.IDLE

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def inflight_batches(self) -> tuple[int, ...]:
        return tuple(self._inflight)

    @property
    def compute_estimate_s(self) -> float:
        return self._estimate_s

    def next_deadline(self) -> float | None:
        """When the batcher next needs a TimerFired, or None if it does not."""
        if not self._queue:
            return None
        expiry = self._earliest_expiry()
        if self._free_executor() is None:
            return expiry
        oldest = next(iter(self._queue.values()))
        return min(oldest.enqueued_at + self._limits.batch_timeout_s, expiry - self._estimate_s)

    # ---- the one entry point ----------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        actions: list[Action] = []
        match event:
            case RequestsAdmitted(admitted):
                self._enqueue(admitted, now, actions)
            case TimerFired(at):
                # A real timer may fire a hair before its time; the current arming
                # counts as due. A stale one (re-armed since) gets no such credit.
                if at == self._armed:
                    now = max(now, at)
            case ExecutorFree(executor, compute_s):
                self._executor_free(executor, compute_s)
            case Withdraw(keys, reason):
                self._withdraw(keys, reason, actions)
            case Drain():
                self._draining = True
            case _:
                raise BatcherError(f"unknown event {event!r}")
        if not self._closed:
            self._expire(now, actions)
            self._dispatch(now, actions)
            if self._draining and not self._queue and not any(self._inflight):
                self._closed = True
                actions.append(Drained())
        self._compact_expiries()
        if self._released != self._reported_released:
            self._reported_released = self._released
            actions.append(QueueReleased(self._released))
        deadline = self.next_deadline()
        if deadline != self._armed:
            self._armed = deadline
            actions.append(ArmTimer(deadline))
        return actions

    # ---- transitions ------------------------------------------------------------------

    def _enqueue(self, admitted: Admitted, now: float, actions: list[Action]) -> None:
        if self._closed:
            failure = Failure(Code.UNAVAILABLE, "server has drained and accepts no new requests")
            self._released += len(admitted.requests)
            actions.append(FailRequests(tuple((r, failure) for r in admitted.requests)))
            return
        duplicates: list[tuple[Request, Failure]] = []
        for r in admitted.requests:
            key = r.key
            if key in self._queue:
                duplicates.append((r, Failure(Code.INVALID_ARGUMENT, f"request id {r.request_id} is already queued")))
                continue
            expires_at = min(r.deadline, admitted.queue_deadline)
            self._seq += 1
            self._queue[key] = _Entry(r, now, expires_at, admitted.queue_deadline, self._seq)
            heapq.heappush(self._expiries, (expires_at, self._seq, key))
        if duplicates:
            self._released += len(duplicates)
            actions.append(FailRequests(tuple(duplicates)))

    def _executor_free(self, executor: int, compute_s: float) -> None:
        if not 0 <= executor < len(self._inflight) or self._inflight[executor] == 0:
            raise BatcherError(f"executor {executor} reported free but has no batch in flight")
        self._inflight[executor] -= 1
        sample = max(0.0, compute_s)
        self._estimate_s += _ESTIMATE_SMOOTHING * (sample - self._estimate_s)

    def _withdraw(self, keys: frozenset[RequestKey], reason: str, actions: list[Action]) -> None:
        gone = [self._queue.pop(k) for k in keys if k in self._queue]
        if gone:
            self._released += len(gone)
            failure = Failure(Code.CANCELLED, reason)
            actions.append(FailRequests(tuple((e.request, failure) for e in gone)))

    def _expire(self, now: float, actions: list[Action]) -> None:
        failures: list[tuple[Request, Failure]] = []
        while self._earliest_expiry() <= now:
            _, _, key = heapq.heappop(self._expiries)
            entry = self._queue.pop(key)
            failures.append((entry.request, _expired(entry, now)))
        if failures:
            self._released += len(failures)
            actions.append(FailRequests(tuple(failures)))

    def _dispatch(self, now: float, actions: list[Action]) -> None:
        limits = self._limits
        while self._queue:
            executor = self._free_executor()
            if executor is None:
                return
            oldest = next(iter(self._queue.values()))
            ready = (
                self._draining
                or len(self._queue) >= limits.max_batch_size
                or now >= oldest.enqueued_at + limits.batch_timeout_s
                or now >= self._earliest_expiry() - self._estimate_s
            )
            if not ready:
                return
            keys = list(islice(self._queue, limits.max_batch_size))
            entries = [self._queue.pop(k) for k in keys]
            self._inflight[executor] += 1
            self._released += len(entries)
            actions.append(
                DispatchBatch(
                    executor,
                    self._next_batch_id,
                    tuple(e.request for e in entries),
                    tuple(e.enqueued_at for e in entries),
                    now,
                )
            )
            self._next_batch_id += 1

    # ---- helpers ----------------------------------------------------------------------

    def _free_executor(self) -> int | None:
        """The least loaded executor with a free slot (lowest id on ties), if any."""
        load, executor = min((n, i) for i, n in enumerate(self._inflight))
        return executor if load < self._limits.max_inflight_per_executor else None

    def _earliest_expiry(self) -> float:
        heap = self._expiries
        while heap:
            at, seq, key = heap[0]
            entry = self._queue.get(key)
            if entry is not None and entry.seq == seq:
                return at
            heapq.heappop(heap)
        return math.inf

    def _compact_expiries(self) -> None:
        # Dispatched entries stay in the heap until they surface; rebuild when they
        # dominate so memory follows the queue, not the throughput.
        if len(self._expiries) > 2 * len(self._queue) + 64:
            self._expiries = [(e.expires_at, e.seq, k) for k, e in self._queue.items()]
            heapq.heapify(self._expiries)


def _expired(entry: _Entry, now: float) -> Failure:
    r = entry.request
    waited_ms = (now - r.received_at) * 1000
    if r.deadline <= entry.queue_deadline:
        limit = f"its timeout of {(r.deadline - r.received_at) * 1000:.1f} ms"
    else:
        limit = f"the max queue wait of {(entry.queue_deadline - entry.enqueued_at) * 1000:.1f} ms"
    return Failure(Code.DEADLINE_EXCEEDED, f"request waited {waited_ms:.1f} ms in the queue, past {limit}")
