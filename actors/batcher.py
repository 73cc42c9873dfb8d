"""Batcher actor: drives the batcher state machine and carries out its actions.

It owns the one timer the core asks for (the timer fires into this actor's
inbox: batch windows, deadlines, the hang watchdog and reload backoff all use
it), has executors replaced when the core says so, tells admission what the core
estimates it can serve, and calls `on_fatal` when the core gives up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pykka

from actors.base import SidecarActor
from actors.inbox import Inbox, Wake, handle_wake
from actors.metrics import reporting_to
from actors.messages import (
    Connect,
    DispatchBatch,
    Drain,
    ExecutorDown,
    ExecutorFree,
    ExecutorLoaded,
    ExecutorLoadFailed,
    ExecutorReleased,
    ExecutorUp,
    FailRequests,
    GetSnapshot,
    Peers,
    QueueDepth,
    QueueReleased,
    RequestsAdmitted,
    ServiceRate,
    TimerFired,
    Withdraw,
)
from sidecar.backends.base import BackendInfo
from sidecar.clock import Clock
from sidecar.core.status import Code, Failure
from sidecar.core.batcher import (
    Action,
    ArmTimer,
    Batcher,
    BatcherError,
    BatchLimits,
    CapacityChanged,
    Drained,
    Event,
    ExecutorGivenUp,
    Fatal,
    OffTable,
    ReloadScheduled,
    ReplaceExecutor,
)

log = logging.getLogger(__name__)


class BatcherActor(SidecarActor):

    def __init__(
        self,
        limits: BatchLimits,
        clock: Clock,
        info: BackendInfo,
        on_drained: Callable[[], None] = lambda: None,
        on_capacity: Callable[[int], None] = lambda up: None,
        on_fatal: Callable[[str], None] = lambda reason: None,
    ) -> None:
        super().__init__()
        self._core = Batcher(limits)
        self._limits = limits
        self._clock = clock
        self._info = info  # what every replacement must load
        self._on_drained = on_drained
        self._on_capacity = on_capacity
        self._on_fatal = on_fatal
        self._peers: Peers | None = None
        self._to: _Outboxes | None = None
        self._timer = clock.timer(self._timer_fired)
        self._reported_depth = 0

    def on_stop(self) -> None:
        self._timer.close()

    def _timer_fired(self, at: float) -> None:
        # Runs on the timer's thread: hand over to this actor's own.
        try:
            self.actor_ref.tell(TimerFired(at))
        except pykka.ActorDeadError:
            pass  # fired while the actor was stopping: nothing is left to batch

    def on_receive(self, message: Any) -> Any:
        match message:
            case Wake():
                handle_wake(message, self.on_receive)
            case (
                RequestsAdmitted()
                | TimerFired()
                | ExecutorFree()
                | ExecutorDown()
                | ExecutorLoadFailed()
                | ExecutorReleased()
                | Withdraw()
                | Drain()
            ):
                self._step(message)
            case ExecutorLoaded(executor, incarnation, info, error):
                self._loaded(executor, incarnation, info, error)
            case Connect(peers):
                self._peers = peers
                self._to = _Outboxes(peers)
            case GetSnapshot():
                return {
                    "state": self._core.state.name,
                    "queue_depth": self._core.queue_depth,
                    "inflight_batches": self._core.inflight_batches,
                    "executors_up": self._core.executors_up,
                    "executor_phases": tuple(p.name for p in self._core.executor_phases),
                    "stuck_hung": self._core.stuck_hung,
                    "fatal": self._core.fatal_reason,
                    "sizes": self._core.sizes(),
                }
            case _:
                log.error("batcher: unexpected message %r", message)
        return None

    def _loaded(self, executor: int, incarnation: int, info: BackendInfo | None, error: str | None) -> None:
        if info is not None and info.spec == self._info.spec:
            log.info("batcher: backend instance %d is back (incarnation %d)", executor, incarnation)
            self._step(ExecutorUp(executor, incarnation))
            return
        why = error or "its model's inputs and outputs differ from the running model's"
        self._step(ExecutorLoadFailed(executor, incarnation, why))

    def _step(self, event: Event) -> None:
        peers, to = self._peers, self._to
        assert peers is not None and to is not None, "Connect must come first"
        try:
            actions = self._core.handle(event, self._clock.now())
        except BatcherError as e:
            log.error("batcher: %s (event ignored)", e)
            return
        except Exception:  # a bug must neither kill the batcher nor leave requests unanswered
            log.exception("batcher: failed to handle %s", type(event).__name__)
            if isinstance(event, RequestsAdmitted):
                failure = Failure(Code.INTERNAL, "the sidecar failed to queue this request; it was not run")
                to.session.tell(FailRequests(tuple((r, failure) for r in event.admitted.requests)))
            return
        # The depth first: once a batch is dispatched its answers may be counted
        # before this step ends, and a reader that sees them must see the depth too.
        if self._core.queue_depth != self._reported_depth:
            self._reported_depth = self._core.queue_depth
            try:
                to.metrics.tell(QueueDepth(self._reported_depth))
            except pykka.ActorDeadError:
                pass
        for action in actions:
            try:
                self._carry_out(action, peers, to)
            except pykka.ActorDeadError:  # a peer has stopped: the pipeline is stopping
                log.debug("batcher: %s not delivered, its receiver has stopped", type(action).__name__)

    def _carry_out(self, action: Action, peers: Peers, to: _Outboxes) -> None:
        match action:
            case DispatchBatch(executor=executor):
                peers.executors.ref(executor).tell(action)
            case FailRequests():
                to.session.tell(action)
            case ArmTimer(at):
                self._timer.arm(at)
            case QueueReleased() | ServiceRate():
                to.admission.tell(action)
            case ReplaceExecutor(executor, incarnation, reason):
                log.warning("batcher: replacing backend instance %d: %s", executor, reason)
                try:
                    peers.executors.replace(executor, incarnation)
                except Exception as e:  # counts as a failed load: the core decides what next
                    log.exception("batcher: backend instance %d could not be started", executor)
                    self.actor_ref.tell(ExecutorLoadFailed(executor, incarnation, f"{type(e).__name__}: {e}"))
            case ReloadScheduled(executor, failed_loads, at, error):
                log.error(
                    "batcher: replacement for backend instance %d failed to load (%d of %d): %s; "
                    "next attempt in %.1f s",
                    executor, failed_loads, self._limits.reload_attempts, error, max(0.0, at - self._clock.now()),
                )
            case ExecutorGivenUp(executor, failed_loads, error):
                log.error(
                    "batcher: backend instance %d given up after %d failed loads (last: %s)",
                    executor, failed_loads, error,
                )
                peers.executors.retire(executor)  # its last, failed, actor: nothing will come of it
            case CapacityChanged(up):
                self._on_capacity(up)
            case Fatal(reason):
                log.critical("batcher: fatal: %s", reason)
                self._on_fatal(reason)
            case Drained():
                self._on_drained()
            case OffTable(before, event, after):
                log.error("batcher: %s took %s to %s, outside its transition table (a bug)", event, before.name,
                          after.name)


class _Outboxes:
    """The batcher's inboxes at its peers (actors/inbox.py)."""

    __slots__ = ("session", "admission", "metrics")

    def __init__(self, peers: Peers) -> None:
        self.session, self.admission = Inbox(peers.session), Inbox(peers.admission)
        self.metrics = reporting_to(peers.metrics)
