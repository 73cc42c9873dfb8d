"""Batcher: decides when, and what, to dispatch to the executors.

Everything that affects a transition lives in this module (with the queue in
fair_queue.py, and executor bookkeeping in executors.py: slots, replacements,
reload backoff, hung instances still stuck). The state is derived from the queue
and three flags, never stored on its own:

    IDLE        nothing queued, not draining
    COLLECTING  requests queued; waiting for a full batch, the window (or a busy executor
                to run dry: rule 6), or a free executor
    DRAINING    drain asked; queued requests go out as soon as executors have room
    CLOSED      drained: nothing queued, no batch in flight; final
    FAILED      fatal: more hung instances stuck than max_hung, or no instance up and
                none that can come back; all queued and arriving requests are answered
                UNAVAILABLE and the shell ends the process; final

The transition table is TRANSITIONS, below the events: data the code runs
(every step is checked against it) and the property test and
docs/architecture.md read. Each cell gives the states an event may lead to and
the actions it may answer (D = DispatchBatch, F = FailRequests, R =
ReplaceExecutor, X = Fatal). ArmTimer, QueueReleased, CapacityChanged,
ServiceRate, ReloadScheduled and ExecutorGivenUp follow any step that changes
what they report. CapacityChanged comes first, before the failures a lost
executor causes, so that readiness turns before clients hear of them. Rules 1-5
below run after any event in a live state (AFTER_ANY_EVENT); the table shows
them on TimerFired. In short:

    IDLE --RequestsAdmitted--> COLLECTING --dispatch--> IDLE
    IDLE | COLLECTING --Drain--> DRAINING --queue empty, nothing in flight--> CLOSED
    any live state --too many hung, or no instance left--> FAILED

ExecutorFree is a BatcherError in any state when the executor has no batch in
flight (see below). IDLE means nothing queued, but batches may be in flight:
a hung executor's waiting batches go back to the queue (COLLECTING) when the
watchdog takes it down. In IDLE and COLLECTING, RequestsAdmitted's F includes the
UNAVAILABLE answer given at once when no executor is up (rule 5).

After every event, in this order (CLOSED and FAILED skip them all):
1. watchdog: an executor whose current batch has run for the backend timeout is
   taken down as hung: that batch fails DEADLINE_EXCEEDED, the batches waiting
   behind it go back to the head of the queue, and a replacement is asked for
   (R). The hung instance counts as stuck (it still holds a thread and a backend)
   until ExecutorReleased says its call returned and its actor stopped;
2. reload: a replacement whose load failed (LoadFailed, or Down while loading) is
   tried again after executors.reload_delay_s (0.5 s, doubling, at most 30 s), as
   a fresh R under a new incarnation; after `reload_attempts` failed loads in a
   row the instance is given up for good;
3. fatal: with more than `max_hung` instances stuck, or no instance up and none
   loading or waiting to reload, the batcher turns FAILED: everything queued fails
   UNAVAILABLE, the R of this step is withdrawn, and Fatal(reason) (X) is answered
   once;
4. expire: a request whose queue deadline (admission + max queue wait) or own
   deadline (receipt + client timeout) has come is failed DEADLINE_EXCEEDED;
5. no executor up: every queued request fails UNAVAILABLE at once ("no backend
   instance is up"), with a retry hint (until the next reload is due), instead
   of waiting to expire;
6. dispatch, while an executor is up and has a free slot (the least loaded one is
   chosen, lowest id on ties: an idle one, if any is), when

       draining  or  queued >= max_batch_size  or  now >= due
       or  the chosen executor is idle (no batch in flight on it) and some request
           must leave now to finish by its deadline (deadline - estimate <= now)

   where `due` depends on the dispatch policy (BatchLimits.dispatch, the key
   sidecar.batch.dispatch; see below):

       window            oldest.enqueued_at + window
       eager-when-idle   at once if the chosen executor is idle; if it is busy, when
                         it is due to run dry: its head batch's start + batches on
                         it x estimate (oldest.enqueued_at + window until a batch
                         has been timed)

   taking urgent requests first (earliest deadline first), then one request per
   stream in turn (fair_queue.py). A slot behind other batches on a busy executor
   takes only requests that can finish from it,

       deadline >= start + estimate,  start = now + max(0, batches ahead x estimate
                                                         - how long the running one has run)

   (urgency alone does not make such a slot ready); the rest stay queued, for an
   idle executor or for rule 7;
7. a request that can no longer finish by its deadline (deadline - estimated
   compute time has passed) is failed DEADLINE_EXCEEDED instead of wasting compute.

Dispatch policy. `window` holds a partial batch for the window wherever it is
going. `eager-when-idle` (the sidecar's default) holds one only while it would
have to wait anyway:

- An idle executor takes what is queued at once. The window trades a request's
  latency for a fuller batch, which pays only while compute is scarce; an idle
  executor is compute going spare, and a lone request held beside it waits the
  whole window for company that at low load does not come (1 in flight: window
  + compute, instead of compute).
- The free slot of a busy executor (behind its running batch) takes a partial
  batch when the executor is due to run dry, not when the window ends. The batch
  could not start sooner either way, so holding it costs it nothing, and what
  arrives while the backend works joins it: batches are as full as the load
  allows. It goes when the running batch is due to end, or, if that batch ends
  sooner, on its ExecutorFree (the executor is then idle: the point above). The
  price: the backend may wait a message hop between the two, which a batch put
  behind it early would have saved; full batches still go behind at once, so
  under load it never waits. Ending the hold at the window instead splits the
  load into small batches whenever compute outlasts the window, and a closed
  loop of clients stays split: each group comes back while another computes,
  and pays the backend's fixed cost alone. (In the closed-loop model of tests/core/test_batcher.py, 64
  in flight on the benchmark's mock with one request arriving first, alone,
  fell from 12.1k to 8.8k req/s that way.) Sending at once instead would make
  every batch under load a few requests.
- So at 8 in flight on one executor: 8 that arrive together go as one batch at
  once; if the first arrives alone it goes at once, and the next 7 collect while
  it runs and go together when it is due to end; the two groups then take turns,
  each computing while the other travels. At 64 in flight the executor is never
  idle and batches fill to max_batch_size, as under `window`.
- Idle means the chosen executor, not all of them: the least loaded is chosen,
  so with two instances a request that arrives while one works goes to the other
  at once, instead of waiting out the window beside it. (Waiting for both to be
  idle costs that at low load and gains nothing under load in the model.)
- The window still stands in for the estimate until a batch has been timed; a
  window of 0 sends partial batches into busy executors' slots at once only
  under `window`.

ExecutorFree, ExecutorUp and ExecutorLoadFailed from an old incarnation (it was
replaced) are ignored; an ExecutorFree from the current incarnation with no batch
in flight is illegal: it raises BatcherError and leaves the state as it was. See
docs/architecture.md.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import get_args

from sidecar.core.admission import MIN_RETRY_AFTER_S, Admitted
from sidecar.core.executors import RELOAD_BACKOFF_S, ExecutorSlots, InFlight, Phase
from sidecar.core.fair_queue import Entry, FairQueue
from sidecar.core.request import Request, RequestKey
from sidecar.core.status import Code, Failure

# Weight of the newest compute-time sample in the running estimate.
_ESTIMATE_SMOOTHING = 0.2
# The service rate is reported again when it has moved by more than this fraction.
_RATE_REPORT_STEP = 0.1


class Dispatch(Enum):
    """When a partial batch is due (rule 6 and the dispatch policy, above)."""

    EAGER_WHEN_IDLE = "eager-when-idle"  # to an idle executor at once; to a busy one as it runs dry
    WINDOW = "window"  # when the window has run out, wherever it goes


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_batch_size: int
    batch_timeout_s: float  # the window, counted from the oldest queued request
    executors: int
    max_inflight_per_executor: int
    backend_timeout_s: float = math.inf  # a batch running longer than this is declared hung
    max_hung: int = 2  # hung instances still stuck that are tolerated; one more is fatal
    reload_attempts: int = 5  # loads tried for a replacement before it is given up
    # WINDOW here, so that limits built by hand (tests, mostly) batch as they did
    # before the policy existed; the sidecar's default is the config key's.
    dispatch: Dispatch = Dispatch.WINDOW


class State(Enum):
    IDLE = "IDLE"
    COLLECTING = "COLLECTING"
    DRAINING = "DRAINING"
    CLOSED = "CLOSED"
    FAILED = "FAILED"


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
class ExecutorLoadFailed:
    """A replacement could not be made, started or loaded (or loaded another model)."""

    executor: int
    incarnation: int
    error: str


@dataclass(frozen=True, slots=True)
class ExecutorReleased:
    """A retired executor's actor has stopped: its thread is done, its backend closed.
    For one given up on as hung, this is its backend call finally returning."""

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


Event = (
    RequestsAdmitted
    | TimerFired
    | ExecutorFree
    | ExecutorDown
    | ExecutorUp
    | ExecutorLoadFailed
    | ExecutorReleased
    | Withdraw
    | Drain
)


# ---- the transition table, as data --------------------------------------------------

ERROR = "BatcherError"  # in a cell: the event may be refused (BatcherError), nothing changed


@dataclass(frozen=True, slots=True)
class Cell:
    """What one event may do in one state: the states it may lead to, and the
    actions it may answer with (D DispatchBatch, F FailRequests, R ReplaceExecutor,
    X Fatal; the reporting actions may follow any step)."""

    to: tuple[State | str, ...]
    actions: str = ""


_ANY = get_args(Event)  # every event type

# The table of this module's header, as the code runs it: `handle` refuses an event
# with no cell, and answers OffTable for a step whose resulting state is outside
# its cell and AFTER_ANY_EVENT (a bug, which the actor logs; the action letters are
# what the docs show, not checked). The property test and
# docs/architecture.md's table read it here (tests/core/test_batcher_table.py).
TRANSITIONS: dict[tuple[State, type], Cell] = {
    (State.IDLE, RequestsAdmitted): Cell((State.COLLECTING, State.IDLE), "D, F"),
    (State.IDLE, TimerFired): Cell((State.COLLECTING, State.IDLE, State.FAILED), "D, F, R, X"),
    (State.IDLE, ExecutorFree): Cell((State.IDLE, ERROR)),
    (State.IDLE, ExecutorDown): Cell((State.IDLE, State.FAILED), "F, R, X"),
    (State.IDLE, ExecutorUp): Cell((State.IDLE,)),
    (State.IDLE, ExecutorLoadFailed): Cell((State.IDLE, State.FAILED), "X"),
    (State.IDLE, ExecutorReleased): Cell((State.IDLE,)),
    (State.IDLE, Withdraw): Cell((State.IDLE,)),
    (State.IDLE, Drain): Cell((State.DRAINING, State.CLOSED)),
    (State.COLLECTING, RequestsAdmitted): Cell((State.COLLECTING, State.IDLE), "D, F"),
    (State.COLLECTING, TimerFired): Cell((State.COLLECTING, State.IDLE, State.FAILED), "D, F, R, X"),
    (State.COLLECTING, ExecutorFree): Cell((State.COLLECTING, State.IDLE, ERROR), "D, F"),
    (State.COLLECTING, ExecutorDown): Cell((State.COLLECTING, State.IDLE, State.FAILED), "D, F, R, X"),
    (State.COLLECTING, ExecutorUp): Cell((State.COLLECTING, State.IDLE), "D, F"),
    (State.COLLECTING, ExecutorLoadFailed): Cell((State.COLLECTING, State.IDLE, State.FAILED), "F, X"),
    (State.COLLECTING, ExecutorReleased): Cell((State.COLLECTING, State.IDLE), "F"),
    (State.COLLECTING, Withdraw): Cell((State.COLLECTING, State.IDLE), "F"),
    (State.COLLECTING, Drain): Cell((State.DRAINING, State.CLOSED), "D, F"),
    (State.DRAINING, RequestsAdmitted): Cell((State.DRAINING,), "D, F"),
    (State.DRAINING, TimerFired): Cell((State.DRAINING, State.CLOSED, State.FAILED), "D, F, R, X"),
    (State.DRAINING, ExecutorFree): Cell((State.DRAINING, State.CLOSED, ERROR), "D, F"),
    (State.DRAINING, ExecutorDown): Cell((State.DRAINING, State.CLOSED, State.FAILED), "D, F, R, X"),
    (State.DRAINING, ExecutorUp): Cell((State.DRAINING, State.CLOSED), "D, F"),
    (State.DRAINING, ExecutorLoadFailed): Cell((State.DRAINING, State.CLOSED, State.FAILED), "F, X"),
    (State.DRAINING, ExecutorReleased): Cell((State.DRAINING, State.CLOSED), "F"),
    (State.DRAINING, Withdraw): Cell((State.DRAINING, State.CLOSED), "F"),
    (State.DRAINING, Drain): Cell((State.DRAINING,)),
    **{(State.CLOSED, e): Cell((State.CLOSED,)) for e in _ANY},
    (State.CLOSED, RequestsAdmitted): Cell((State.CLOSED,), "F"),
    # A replaced executor's late free is ignored (the batch was answered already).
    (State.CLOSED, ExecutorFree): Cell((State.CLOSED, ERROR)),
    **{(State.FAILED, e): Cell((State.FAILED,)) for e in _ANY},
    (State.FAILED, RequestsAdmitted): Cell((State.FAILED,), "F"),
    (State.FAILED, ExecutorFree): Cell((State.FAILED, ERROR)),
}

# Rules 1-5 run after every event in a live state, whatever it was: the watchdog
# may put a hung executor's waiting batches back in the queue, the fatal check may
# fail the batcher for good, expiry may empty a draining queue. The table shows
# them on TimerFired (the event that brings the time on in tests); these are the
# states they can reach from any event.
AFTER_ANY_EVENT: dict[State, tuple[State, ...]] = {
    State.IDLE: (State.COLLECTING, State.FAILED),
    State.COLLECTING: (State.FAILED,),
    State.DRAINING: (State.CLOSED, State.FAILED),
}


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
class ReloadScheduled:
    """A replacement's load failed `failed_loads` times in a row; the next is tried at `at`."""

    executor: int
    failed_loads: int
    at: float
    error: str


@dataclass(frozen=True, slots=True)
class ExecutorGivenUp:
    """A replacement failed to load `failed_loads` times in a row: it never comes back."""

    executor: int
    failed_loads: int
    error: str


@dataclass(frozen=True, slots=True)
class CapacityChanged:
    executors_up: int


@dataclass(frozen=True, slots=True)
class ServiceRate:
    """Requests a second the executors up can take, as the batcher estimates it: batch
    size x executors up / compute estimate, or / the window before any batch was timed.
    None when it cannot tell (no batch timed yet and no window)."""

    per_s: float | None


@dataclass(frozen=True, slots=True)
class Fatal:
    """The sidecar cannot recover in-process: it must say so and exit."""

    reason: str


@dataclass(frozen=True, slots=True)
class Drained:
    pass


@dataclass(frozen=True, slots=True)
class OffTable:
    """A step landed outside its TRANSITIONS cell: a bug. Its actions still stand
    (dropping them would leave requests unanswered); the shell logs this."""

    before: State
    event: str
    after: State


Action = (
    OffTable
    | DispatchBatch
    | FailRequests
    | ArmTimer
    | QueueReleased
    | ReplaceExecutor
    | ReloadScheduled
    | ExecutorGivenUp
    | CapacityChanged
    | ServiceRate
    | Fatal
    | Drained
)


class Batcher:
    def __init__(self, limits: BatchLimits) -> None:
        if limits.max_batch_size < 1 or limits.executors < 1 or limits.max_inflight_per_executor < 1:
            raise ValueError(f"batch size, executors and in-flight batches must be >= 1: {limits}")
        if limits.max_hung < 0 or limits.reload_attempts < 1:
            raise ValueError(f"max_hung must be >= 0 and reload_attempts >= 1: {limits}")
        if not isinstance(limits.dispatch, Dispatch):  # a bare "window" would read as not eager
            raise ValueError(f"dispatch must be a Dispatch, not {limits.dispatch!r}")
        self._limits = limits
        self._queue = FairQueue()
        self._slots = ExecutorSlots(limits.executors, limits.max_inflight_per_executor)
        self._draining = False
        self._closed = False
        self._fatal: str | None = None
        self._released: Counter[int] = Counter()
        self._armed: float | None = None
        self._reported_up = limits.executors
        self._reported_rate: float | None = None
        self._rate_reported = False
        self._next_batch_id = 0
        self._estimate_s = 0.0
        self._batches_timed = 0
        # Set by dispatch when a batch was due but no queued request could finish
        # from the free slot: the window then cannot wake anything until an event.
        self._slot_blocked = False

    # ---- queries ----------------------------------------------------------------------

    @property
    def state(self) -> State:
        if self._closed:
            return State.CLOSED
        if self._fatal is not None:
            return State.FAILED
        if self._draining:
            return State.DRAINING
        return State.COLLECTING if len(self._queue) else State.IDLE

    def sizes(self) -> dict[str, int]:
        """Its long-lived structures' sizes, for the memory report (docs/soak.md)."""
        return {
            **{f"queue.{k}": v for k, v in self._queue.sizes().items()},
            "released_pending": len(self._released),
            "stuck_hung": self._slots.stuck_count,
            "inflight_batches": sum(self._slots.inflight_counts),
        }

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
    def executor_phases(self) -> tuple[Phase, ...]:
        return self._slots.phases

    @property
    def stuck_hung(self) -> int:
        """Instances given up on as hung whose backend call has not returned."""
        return self._slots.stuck_count

    @property
    def fatal_reason(self) -> str | None:
        return self._fatal

    @property
    def compute_estimate_s(self) -> float:
        return self._estimate_s

    def service_rate(self) -> float | None:
        """Requests a second the executors up can take (see ServiceRate)."""
        estimate = self._estimate_s if self._batches_timed else None
        return estimated_service_rate(self._limits, self._slots.up_count, estimate)

    def next_deadline(self) -> float | None:
        """When the batcher next needs a TimerFired, or None if it does not."""
        if self._closed or self._fatal is not None:
            return None
        q, slots = self._queue, self._slots
        candidates = [slots.next_hang_check(self._limits.backend_timeout_s), slots.next_reload()]
        if len(q):
            candidates += [q.earliest_queue_deadline(), q.earliest_deadline() - self._estimate_s]
            executor = slots.free_slot()
            if executor is not None and not self._slot_blocked:
                candidates.append(self._ready_at(executor))
        at = min(candidates)
        return None if at == math.inf else at

    # ---- the one entry point ----------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        before = self.state
        cell = TRANSITIONS.get((before, type(event)))
        if cell is None:
            raise BatcherError(f"unknown event {event!r}")
        actions: list[Action] = []
        live = not self._closed and self._fatal is None
        slots = self._slots
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
                if live and slots.is_current(executor, incarnation):
                    if slots.is_up(executor):
                        failure = Failure(Code.INTERNAL, reason)
                        self._take_down(executor, reason, failure, hung=False, requeue_waiting=False, actions=actions)
                    elif slots.is_loading(executor):
                        self._load_failed(executor, f"its executor stopped while loading: {reason}", now, actions)
            case ExecutorUp(executor, incarnation):
                if live and slots.is_current(executor, incarnation) and slots.is_loading(executor):
                    slots.bring_up(executor)
            case ExecutorLoadFailed(executor, incarnation, error):
                if live and slots.is_current(executor, incarnation) and slots.is_loading(executor):
                    self._load_failed(executor, error, now, actions)
            case ExecutorReleased(executor, incarnation):
                slots.release(executor, incarnation)
            case Withdraw(keys, reason):
                self._withdraw(keys, reason, actions)
            case Drain():
                self._draining = True
        if live:
            self._watchdog(now, actions)  # first: what it puts back may have expired meanwhile
            self._reload(now, actions)
            if not self._check_fatal(actions):
                self._expire(now, actions)
                self._fail_unserved(now, actions)
                self._dispatch(now, actions)
                self._fail_hopeless(now, actions)
                if self._draining and not len(self._queue) and not slots.any_inflight():
                    self._closed = True
                    actions.append(Drained())
        self._report(actions)
        if (after := self.state) not in cell.to and after not in AFTER_ANY_EVENT.get(before, ()):
            actions.append(OffTable(before, type(event).__name__, after))
        return actions

    # ---- transitions ------------------------------------------------------------------

    def _enqueue(self, admitted: Admitted, now: float, actions: list[Action]) -> None:
        if self._closed or self._fatal is not None:
            if self._fatal is not None:
                failure = Failure(Code.UNAVAILABLE, f"the sidecar is exiting after a fatal fault: {self._fatal}")
            else:
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
            failure = Failure(Code.DEADLINE_EXCEEDED, reason)
            self._take_down(executor, reason, failure, hung=True, requeue_waiting=True, actions=actions)

    def _take_down(
        self, executor: int, reason: str, failure: Failure, *, hung: bool, requeue_waiting: bool, actions: list[Action]
    ) -> None:
        """Fails the batch the executor was running; the ones waiting behind it go
        back to the queue (or fail too, if the executor died and took them along)."""
        incarnation, held = self._slots.take_down(executor, hung=hung)
        running, waiting = held[:1], held[1:]
        if requeue_waiting and waiting:
            back = [e for b in waiting for e in b.entries]
            self._queue.add_front(back)
            for e in back:
                self._released[e.request.stream] -= 1
            waiting = []
        self._fail([(e.request, failure) for b in running + waiting for e in b.entries], actions, released=False)
        actions.append(ReplaceExecutor(executor, incarnation, reason))

    def _load_failed(self, executor: int, error: str, now: float, actions: list[Action]) -> None:
        attempts = self._limits.reload_attempts
        retry_at = self._slots.load_failed(executor, now, attempts, error)
        failed = self._slots.failed_loads(executor)
        if retry_at is None:
            actions.append(ExecutorGivenUp(executor, failed, error))
        else:
            actions.append(ReloadScheduled(executor, failed, retry_at, error))

    def _reload(self, now: float, actions: list[Action]) -> None:
        attempts = self._limits.reload_attempts
        for executor in self._slots.due_reloads(now):
            error = self._slots.last_error(executor)
            incarnation, attempt = self._slots.start_reload(executor)
            reason = (
                f"retrying the load of backend instance {executor} (attempt {attempt} of {attempts}); "
                f"the last one failed: {error}"
            )
            actions.append(ReplaceExecutor(executor, incarnation, reason))

    def _check_fatal(self, actions: list[Action]) -> bool:
        """Rule 3: turns FAILED, answering what is queued, when nothing can recover."""
        limits, slots = self._limits, self._slots
        if slots.stuck_count > limits.max_hung:
            reason = (
                f"{slots.stuck_count} backend instance(s) given up on as hung have not returned from their calls, "
                f"more than sidecar.backend.max-hung ({limits.max_hung}); a wedged backend cannot be "
                "recovered in-process"
            )
        elif slots.up_count == 0 and slots.coming_back == 0:
            errors = "; ".join(
                f"instance {i}: {slots.last_error(i)}" for i, p in enumerate(slots.phases) if p is Phase.GIVEN_UP
            )
            reason = (
                f"no backend instance is up and none can come back: each failed to load "
                f"{limits.reload_attempts} time(s) in a row ({errors})"
            )
        else:
            return False
        self._fatal = reason
        actions[:] = [a for a in actions if not isinstance(a, ReplaceExecutor)]  # no new instance: we exit
        failure = Failure(Code.UNAVAILABLE, f"the sidecar is exiting after a fatal fault: {reason}")
        self._fail([(e.request, failure) for e in self._queue.pop_all()], actions)
        actions.append(Fatal(reason))
        return True

    def _fail_unserved(self, now: float, actions: list[Action]) -> None:
        """Rule 5: with no executor up, nothing waits for one."""
        if self._slots.up_count or not len(self._queue):
            return
        slots = self._slots
        phases = slots.phases
        soonest = [slots.next_reload() - now]
        if Phase.LOADING in phases:
            soonest.append(RELOAD_BACKOFF_S)  # a load is under way; its length is unknown
        retry = max(MIN_RETRY_AFTER_S, min(soonest))
        failure = Failure(
            Code.UNAVAILABLE,
            f"no backend instance is up ({slots.coming_back} of {len(phases)} being reloaded); "
            f"retry after {retry * 1000:.1f} ms",
            retry_after_s=retry,
        )
        self._fail([(e.request, failure) for e in self._queue.pop_all()], actions)

    def _dispatch(self, now: float, actions: list[Action]) -> None:
        limits, q, slots = self._limits, self._queue, self._slots
        self._slot_blocked = False
        while len(q):
            executor = slots.free_slot()
            if executor is None:
                return
            lead = self._estimate_s  # a request must leave this long before its deadline
            busy = slots.has_inflight(executor)  # the batch would wait behind others
            ready = (
                self._draining
                or len(q) >= limits.max_batch_size
                or now >= self._ready_at(executor)
                or (not busy and q.earliest_deadline() - lead <= now)
            )
            if not ready:
                return
            finish_by = slots.estimated_start(executor, now, lead) + lead if busy else -math.inf
            entries = q.take(limits.max_batch_size, now, lead, finish_by)
            if not entries:
                self._slot_blocked = True  # nothing queued can finish from this slot
                return
            batch_id = self._next_batch_id
            self._next_batch_id += 1
            slots.dispatch(executor, InFlight(batch_id, entries, now, None), now)
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

    def _ready_at(self, executor: int) -> float:
        """When a partial batch for `executor`'s free slot is due, by time alone (rule 6
        and the dispatch policy); the queue must not be empty. One formula serves the
        dispatch and the timer, so a timer fired at this time finds the slot ready."""
        window_end = self._queue.oldest_enqueued_at() + self._limits.batch_timeout_s
        if self._limits.dispatch is Dispatch.WINDOW:
            return window_end
        if not self._slots.has_inflight(executor):
            return -math.inf  # idle: at once
        if not self._batches_timed:
            return window_end  # no estimate of when it runs dry yet: the window stands in
        return self._slots.runs_dry_at(executor, self._estimate_s)

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
                        f"a batch takes about {estimate * 1000:.1f} ms and no executor can start it in time",
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
            # First: readiness should turn before clients hear of the failures the loss caused.
            actions.insert(0, CapacityChanged(up))
        rate = self.service_rate()
        if not self._rate_reported or _moved(rate, self._reported_rate):
            self._rate_reported, self._reported_rate = True, rate
            actions.append(ServiceRate(rate))
        deadline = self.next_deadline()
        if deadline != self._armed:
            self._armed = deadline
            actions.append(ArmTimer(deadline))


def estimated_service_rate(limits: BatchLimits, executors_up: int, estimate_s: float | None) -> float | None:
    """Requests a second: batch size x executors up / compute estimate; before any batch
    was timed (`estimate_s` None), / the batch window; None if that is zero too."""
    per_batch_s = limits.batch_timeout_s if estimate_s is None else estimate_s
    if estimate_s is None and per_batch_s <= 0:
        return None
    if executors_up == 0:
        return 0.0
    if per_batch_s <= 0:
        return math.inf
    return limits.max_batch_size * executors_up / per_batch_s


def _moved(new: float | None, old: float | None) -> bool:
    if new is None or old is None:
        return new is not old
    if new == old:
        return False
    if math.isinf(new) or math.isinf(old) or old == 0 or new == 0:
        return True
    return abs(new - old) > _RATE_REPORT_STEP * max(new, old)


def _expired(entry: Entry, now: float) -> Failure:
    r = entry.request
    waited_ms = (now - r.received_at) * 1000
    if r.deadline <= entry.queue_deadline:
        limit = f"its timeout of {(r.deadline - r.received_at) * 1000:.1f} ms"
    else:
        limit = f"the max queue wait of {(entry.queue_deadline - entry.enqueued_at) * 1000:.1f} ms"
    return Failure(Code.DEADLINE_EXCEEDED, f"request waited {waited_ms:.1f} ms in the queue, past {limit}")
