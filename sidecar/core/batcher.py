"""Batcher: decides when, and what, to dispatch to the executors.

Everything that affects a transition lives in this module (with the queue in
fair_queue.py and executor bookkeeping in executors.py). The state is derived
from the queue and two flags, never stored on its own:

    IDLE        nothing queued, not draining
    COLLECTING  requests queued; waiting for a full batch, the window, or a free executor
    DRAINING    drain asked; queued requests go out as soon as executors have room
    CLOSED      drained: nothing queued, no batch in flight; the final state

Transition table (event -> next state; actions in brackets: D = DispatchBatch,
F = FailRequests, R = ReplaceExecutor; ArmTimer, QueueReleased and
CapacityChanged follow any step that changes what they report):

    state \\ event  RequestsAdmitted  TimerFired       ExecutorFree     ExecutorDown     ExecutorUp       Withdraw         Drain
    IDLE           COLLECTING|IDLE   COLLECTING|IDLE  IDLE             IDLE [F, R]      IDLE             IDLE             DRAINING|CLOSED
                   [D, F]            [F, R] (*)
    COLLECTING     COLLECTING|IDLE   COLLECTING|IDLE  COLLECTING|IDLE  COLLECTING|IDLE  COLLECTING|IDLE  COLLECTING|IDLE  DRAINING|CLOSED
                   [D, F]            [D, F, R]        [D, F]           [F, R]           [D, F]           [F]              [D, F]
    DRAINING       DRAINING [D, F]   DRAINING|CLOSED  DRAINING|CLOSED  DRAINING|CLOSED  DRAINING|CLOSED  DRAINING|CLOSED  DRAINING
                                     [D, F, R]        [D, F]           [F, R]           [D, F]           [F]
    CLOSED         CLOSED [F]        CLOSED           BatcherError     CLOSED           CLOSED           CLOSED           CLOSED

(*) IDLE means nothing queued, but batches may be in flight: a hung executor's
waiting batches go back to the queue (COLLECTING) when the watchdog takes it down.

After every event, in this order:
1. watchdog: an executor whose current batch has run for the backend timeout is
   taken down: that batch fails DEADLINE_EXCEEDED, the batches waiting behind it
   go back to the head of the queue, and a replacement is asked for (R);
2. expire: a request whose queue deadline (admission + max queue wait) or own
   deadline (receipt + client timeout) has come is failed DEADLINE_EXCEEDED;
3. dispatch, while an executor is up and has a free slot, when

       draining  or  queued >= max_batch_size  or  now >= oldest.enqueued_at + window
       or  some request must leave now to finish by its deadline (deadline - estimate <= now)

   taking urgent requests first (earliest deadline first), then one request per
   stream in turn (fair_queue.py);
4. a request that can no longer finish by its deadline (deadline - estimated
   compute time has passed) is failed DEADLINE_EXCEEDED instead of wasting compute.

ExecutorFree from an executor's old incarnation (it was replaced) is ignored; one
from the current incarnation with no batch in flight is illegal: it raises
BatcherError and leaves the state as it was. See docs/architecture.md.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from enum import Enum

from sidecar.core.admission import Admitted
from sidecar.core.executors import ExecutorSlots, InFlight
from sidecar.core.fair_queue import Entry, FairQueue
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
    backend_timeout_s: float = math.inf  # a batch running longer than this is declared hung


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
    incarnation: int
    compute_s: float


@dataclass(frozen=True, slots=True)
class ExecutorDown:
    """The executor's actor died; what it held must be answered."""

    executor: int
    incarnation: int
    reason: str


@dataclass(frozen=True, slots=True)
class ExecutorUp:
    """A replacement executor has loaded its backend."""

    executor: int
    incarnation: int


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Remove these requests if still queued (their client has gone, or cancelled them)."""

    keys: frozenset[RequestKey]
    reason: str


@dataclass(frozen=True, slots=True)
class Drain:
    pass


Event = RequestsAdmitted | TimerFired | ExecutorFree | ExecutorDown | ExecutorUp | Withdraw | Drain


# ---- actions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DispatchBatch:
    executor: int
    batch_id: int
    requests: tuple[Request, ...]
    enqueued_at: tuple[float, ...]  # per request
    dispatched_at: float


@dataclass(frozen=True, slots=True)
class FailRequests:
    failures: tuple[tuple[Request, Failure], ...]


@dataclass(frozen=True, slots=True)
class ArmTimer:
    at: float | None  # None: disarm


@dataclass(frozen=True, slots=True)
class QueueReleased:
    """Per stream, how many requests left the queue (negative: came back) since the last report."""

    by_stream: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class ReplaceExecutor:
    """Start a fresh executor (and backend instance) as `executor`, under `incarnation`."""

    executor: int
    incarnation: int
    reason: str


@dataclass(frozen=True, slots=True)
class CapacityChanged:
    executors_up: int


@dataclass(frozen=True, slots=True)
class Drained:
    pass


Action = DispatchBatch | FailRequests | ArmTimer | QueueReleased | ReplaceExecutor | CapacityChanged | Drained


class Batcher:
    def __init__(self, limits: BatchLimits) -> None:
        if limits.max_batch_size < 1 or limits.executors < 1 or limits.max_inflight_per_executor < 1:
            raise ValueError(f"batch size, executors and in-flight batches must be >= 1: {limits}")
        self._limits = limits
        self._queue = FairQueue()
        self._slots = ExecutorSlots(limits.executors, limits.max_inflight_per_executor)
        self._draining = False
        self._closed = False
        self._released: Counter[int] = Counter()
        self._armed: float | None = None
        self._reported_up = limits.executors
        self._next_batch_id = 0
        self._estimate_s = 0.0
        self._batches_timed = 0

    # ---- queries ----------------------------------------------------------------------

    @property
    def state(self) -> State:
        if self._closed:
            return State.CLOSED
        if self._draining:
            return State.DRAINING
        return State.COLLECTING if len(self._queue) else State.IDLE

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def stream_depth(self, stream: int) -> int:
        return self._queue.depth_of(stream)

    @property
    def inflight_batches(self) -> tuple[int, ...]:
        return self._slots.inflight_counts

    @property
    def executors_up(self) -> int:
        return self._slots.up_count

    @property
    def compute_estimate_s(self) -> float:
        return self._estimate_s

    def next_deadline(self) -> float | None:
        """When the batcher next needs a TimerFired, or None if it does not."""
        q = self._queue
        candidates = [self._slots.next_hang_check(self._limits.backend_timeout_s)]
        if len(q):
            candidates += [q.earliest_queue_deadline(), q.earliest_deadline() - self._estimate_s]
            if self._slots.free_slot() is not None:
                candidates.append(q.oldest_enqueued_at() + self._limits.batch_timeout_s)
        at = min(candidates)
        return None if at == math.inf else at

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
            case ExecutorFree(executor, incarnation, compute_s):
                self._executor_free(executor, incarnation, compute_s, now)
            case ExecutorDown(executor, incarnation, reason):
                if not self._closed and self._slots.is_current(executor, incarnation) and self._slots.is_up(executor):
                    self._take_down(executor, reason, Failure(Code.INTERNAL, reason), requeue_waiting=False, actions=actions)
            case ExecutorUp(executor, incarnation):
                if self._slots.is_current(executor, incarnation):
                    self._slots.bring_up(executor)
            case Withdraw(keys, reason):
                self._withdraw(keys, reason, actions)
            case Drain():
                self._draining = True
            case _:
                raise BatcherError(f"unknown event {event!r}")
        if not self._closed:
            self._watchdog(now, actions)  # first: what it puts back may have expired meanwhile
            self._expire(now, actions)
            self._dispatch(now, actions)
            self._fail_hopeless(now, actions)
            if self._draining and not len(self._queue) and not self._slots.any_inflight():
                self._closed = True
                actions.append(Drained())
        self._report(actions)
        return actions

    # ---- transitions ------------------------------------------------------------------

    def _enqueue(self, admitted: Admitted, now: float, actions: list[Action]) -> None:
        if self._closed:
            failure = Failure(Code.UNAVAILABLE, "server has drained and accepts no new requests")
            self._fail([(r, failure) for r in admitted.requests], actions)
            return
        duplicates: list[tuple[Request, Failure]] = []
        queue, queue_deadline = self._queue, admitted.queue_deadline
        entries: dict[RequestKey, Entry] = {}
        for r in admitted.requests:
            entry = Entry(r, now, queue_deadline)
            if entry.key in queue or entry.key in entries:
                duplicates.append((r, Failure(Code.INVALID_ARGUMENT, f"request id {r.request_id} is already queued")))
                continue
            entries[entry.key] = entry
        queue.add(list(entries.values()))
        self._fail(duplicates, actions)

    def _executor_free(self, executor: int, incarnation: int, compute_s: float, now: float) -> None:
        if not self._slots.is_current(executor, incarnation) and 0 <= executor < self._limits.executors:
            return  # a replaced executor finishing late: its batch was answered already
        if not self._slots.is_current(executor, incarnation) or not self._slots.has_inflight(executor):
            raise BatcherError(f"executor {executor} reported free but has no batch in flight")
        self._slots.finish(executor, now)
        sample = max(0.0, compute_s)
        if self._batches_timed == 0:
            self._estimate_s = sample  # the first sample beats a guess of zero
        else:
            self._estimate_s += _ESTIMATE_SMOOTHING * (sample - self._estimate_s)
        self._batches_timed += 1

    def _withdraw(self, keys: frozenset[RequestKey], reason: str, actions: list[Action]) -> None:
        gone = [e for e in map(self._queue.remove, keys) if e is not None]
        failure = Failure(Code.CANCELLED, reason)
        self._fail([(e.request, failure) for e in gone], actions)

    def _expire(self, now: float, actions: list[Action]) -> None:
        self._fail([(e.request, _expired(e, now)) for e in self._queue.pop_expired(now)], actions)

    def _watchdog(self, now: float, actions: list[Action]) -> None:
        timeout = self._limits.backend_timeout_s
        for executor in self._slots.hung(now, timeout):
            reason = (
                f"the backend gave no answer within the backend timeout of {timeout:g} s "
                f"(instance {executor}); the instance is being replaced"
            )
            self._take_down(executor, reason, Failure(Code.DEADLINE_EXCEEDED, reason), requeue_waiting=True, actions=actions)

    def _take_down(
        self, executor: int, reason: str, failure: Failure, *, requeue_waiting: bool, actions: list[Action]
    ) -> None:
        """Fails the batch the executor was running; the ones waiting behind it go
        back to the queue (or fail too, if the executor died and took them along)."""
        incarnation, held = self._slots.take_down(executor)
        running, waiting = held[:1], held[1:]
        if requeue_waiting and waiting:
            back = [e for b in waiting for e in b.entries]
            self._queue.add_front(back)
            for e in back:
                self._released[e.request.stream] -= 1
            waiting = []
        self._fail([(e.request, failure) for b in running + waiting for e in b.entries], actions, released=False)
        actions.append(ReplaceExecutor(executor, incarnation, reason))

    def _dispatch(self, now: float, actions: list[Action]) -> None:
        limits, q = self._limits, self._queue
        while len(q):
            executor = self._slots.free_slot()
            if executor is None:
                return
            lead = self._estimate_s  # a request must leave this long before its deadline
            ready = (
                self._draining
                or len(q) >= limits.max_batch_size
                or now >= q.oldest_enqueued_at() + limits.batch_timeout_s
                or q.earliest_deadline() - lead <= now
            )
            if not ready:
                return
            entries = q.take(limits.max_batch_size, now, lead)
            batch_id = self._next_batch_id
            self._next_batch_id += 1
            self._slots.dispatch(executor, InFlight(batch_id, entries, now, None), now)
            for e in entries:
                self._released[e.request.stream] += 1
            actions.append(
                DispatchBatch(
                    executor,
                    batch_id,
                    tuple(e.request for e in entries),
                    tuple(e.enqueued_at for e in entries),
                    now,
                )
            )

    def _fail_hopeless(self, now: float, actions: list[Action]) -> None:
        """Requests still queued that cannot finish by their deadline any more."""
        estimate = self._estimate_s
        hopeless = self._queue.pop_urgent(now, estimate)
        self._fail(
            [
                (
                    e.request,
                    Failure(
                        Code.DEADLINE_EXCEEDED,
                        f"request can no longer finish by its deadline: {(e.deadline - now) * 1000:.1f} ms left, "
                        f"a batch takes about {estimate * 1000:.1f} ms and no executor is free",
                    ),
                )
                for e in hopeless
            ],
            actions,
        )

    # ---- helpers ----------------------------------------------------------------------

    def _fail(self, failures: list[tuple[Request, Failure]], actions: list[Action], *, released: bool = True) -> None:
        if not failures:
            return
        if released:  # they leave the queue (a running batch's requests left it at dispatch)
            for r, _ in failures:
                self._released[r.stream] += 1
        actions.append(FailRequests(tuple(failures)))

    def _report(self, actions: list[Action]) -> None:
        released = tuple((s, n) for s, n in self._released.items() if n)
        self._released.clear()
        if released:
            actions.append(QueueReleased(released))
        up = self._slots.up_count
        if up != self._reported_up:
            self._reported_up = up
            actions.append(CapacityChanged(up))
        deadline = self.next_deadline()
        if deadline != self._armed:
            self._armed = deadline
            actions.append(ArmTimer(deadline))


def _expired(entry: Entry, now: float) -> Failure:
    r = entry.request
    waited_ms = (now - r.received_at) * 1000
    if r.deadline <= entry.queue_deadline:
        limit = f"its timeout of {(r.deadline - r.received_at) * 1000:.1f} ms"
    else:
        limit = f"the max queue wait of {(entry.queue_deadline - entry.enqueued_at) * 1000:.1f} ms"
    return Failure(Code.DEADLINE_EXCEEDED, f"request waited {waited_ms:.1f} ms in the queue, past {limit}")
