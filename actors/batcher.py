"""Batcher actor: drives the batcher state machine and carries out its actions.

It owns the one timer the core asks for; the timer fires into this actor's inbox.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pykka

from actors.messages import (
    Connect,
    DispatchBatch,
    Drain,
    ExecutorFree,
    FailRequests,
    GetSnapshot,
    Peers,
    QueueDepth,
    QueueReleased,
    RequestsAdmitted,
    TimerFired,
    Withdraw,
)
from sidecar.clock import Clock
from sidecar.core.batcher import ArmTimer, Batcher, BatcherError, BatchLimits, Drained, Event

log = logging.getLogger(__name__)


class BatcherActor(pykka.ThreadingActor):
    # A hung backend call must not keep the process alive after shutdown.
    use_daemon_thread = True

    def __init__(self, limits: BatchLimits, clock: Clock, on_drained: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self._core = Batcher(limits)
        self._clock = clock
        self._on_drained = on_drained
        self._peers: Peers | None = None
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
            case RequestsAdmitted() | TimerFired() | ExecutorFree() | Withdraw() | Drain():
                self._step(message)
            case Connect(peers):
                self._peers = peers
            case GetSnapshot():
                return {
                    "state": self._core.state.name,
                    "queue_depth": self._core.queue_depth,
                    "inflight_batches": self._core.inflight_batches,
                }
            case _:
                log.error("batcher: unexpected message %r", message)
        return None

    def _step(self, event: Event) -> None:
        peers = self._peers
        assert peers is not None, "Connect must come first"
        try:
            actions = self._core.handle(event, self._clock.now())
        except BatcherError as e:
            log.error("batcher: %s (event ignored)", e)
            return
        for action in actions:
            match action:
                case DispatchBatch(executor=executor):
                    peers.executors[executor].tell(action)
                case FailRequests():
                    peers.session.tell(action)
                case ArmTimer(at):
                    self._timer.arm(at)
                case QueueReleased():
                    peers.admission.tell(action)
                case Drained():
                    self._on_drained()
        if self._core.queue_depth != self._reported_depth:
            self._reported_depth = self._core.queue_depth
            peers.metrics.tell(QueueDepth(self._reported_depth))
