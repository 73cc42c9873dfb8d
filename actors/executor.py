"""Executor actor: one per backend instance, running its batches one at a time.

The blocking backend call runs on this actor's own thread, so the rest of the
pipeline keeps moving; the GIL is released by real backends (numpy, CUDA) and by
the mock's sleep. A failing batch fails exactly its own requests.

Each executor has an incarnation number. When the batcher gives up on it (its
backend hung past the backend timeout) the pool sets its `retired` event: from
then on it drops whatever it finishes, since those requests were answered
already. If the actor stops without being retired (it died), it tells the
batcher, which answers what it held and has it replaced. A retired one that
stops tells the batcher ExecutorReleased once its backend is closed: for one
given up on as hung, that is its call finally returning, and its thread, backend
(and GPU context) being freed.

A replacement is started with no backend, only the factory: it makes the
instance and loads it in its own thread, on LoadBackend (a CUDA context belongs
to the thread that made it; and a slow factory holds up no one else). Loading
includes the backend's warm-up over the batch sizes it will see, so the sidecar
turns READY (and a replacement comes back) only once the engine is warm.

A batch is run in two phases (sidecar/backends/base.py): start (join the
requests' bytes, into the backend's own buffers where it has them, and submit)
and finish (collect, split, answer). For most backends the two follow at once.
A pipelined backend's submit returns before the device is done, so when another
batch already waits in the mailbox the executor starts that one before it
finishes the first: joining and copying batch N+1 overlaps computing batch N.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from actors.base import SidecarActor
from actors.inbox import Inbox
from actors.messages import (
    BatchExecuted,
    BatchFailed,
    BatchSucceeded,
    BatchTiming,
    Connect,
    DispatchBatch,
    ExecutorDown,
    ExecutorFree,
    ExecutorLoaded,
    ExecutorReleased,
    LoadBackend,
    Peers,
)
from sidecar.backends.base import Backend, BackendInfo, warm_up_sizes
from sidecar.clock import Clock
from sidecar.core.status import Code, Failure
from sidecar.core.tensors import ModelSpec, join_inputs, join_into, split_outputs

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Started:
    """A batch submitted to the backend and not yet collected (or failed to start)."""

    batch: DispatchBatch
    started: float
    handle: Any = None
    failure: Failure | None = None


class ExecutorActor(SidecarActor):

    def __init__(
        self,
        index: int,
        incarnation: int,
        backend: Backend | None,
        clock: Clock,
        retired: threading.Event,
        make_backend: Callable[[], Backend] | None = None,
        max_batch: int | None = None,
    ) -> None:
        super().__init__()
        if backend is None and make_backend is None:
            raise ValueError("an executor needs a backend or a factory to make one")
        self._index = index
        self._incarnation = incarnation
        self._backend = backend
        self._make_backend = make_backend
        self._clock = clock
        self._retired = retired
        self._spec: ModelSpec | None = None
        self._max_batch = max_batch  # the configured largest batch: what warm-up covers
        self._pending: _Started | None = None  # a pipelined backend's batch in flight
        self._peers: Peers | None = None
        # Per batch: free to the batcher, answers to the session, figures to metrics.
        self._outboxes: tuple[Inbox, Inbox, Inbox] | None = None

    def on_receive(self, message: Any) -> Any:
        if self._pending is not None and not isinstance(message, DispatchBatch):
            self._finish_pending()  # nothing else may wait behind a batch on the device
        match message:
            case DispatchBatch():
                if not self._retired.is_set():
                    self._run(message)
            case LoadBackend(reply_to):
                return self._load(reply_to)
            case Connect(peers):
                self._peers = peers
                self._outboxes = (Inbox(peers.batcher), Inbox(peers.session), Inbox(peers.metrics))
            case _:
                log.error("executor %d: unexpected message %r", self._index, message)
        return None

    def _load(self, reply_to: pykka.ActorRef[Any] | None) -> BackendInfo | None:
        if reply_to is None:  # asked at start-up: the wiring waits for the answer
            return self._load_and_warm()
        try:
            info = self._load_and_warm()
            message = ExecutorLoaded(self._index, self._incarnation, info, None)
        except Exception as e:
            log.warning("executor %d: replacement backend failed to load: %s: %s", self._index, type(e).__name__, e)
            message = ExecutorLoaded(self._index, self._incarnation, None, f"{type(e).__name__}: {e}")
        try:
            reply_to.tell(message)
        except pykka.ActorDeadError:
            pass  # the pipeline is stopping
        return None

    def _load_and_warm(self) -> BackendInfo:
        backend = self._made()
        info = backend.load()
        if self._max_batch is not None:
            largest = min(self._max_batch, info.max_batch_size or self._max_batch)
            backend.warm_up(info.spec, warm_up_sizes(largest))
        self._spec = info.spec
        return info

    def _made(self) -> Backend:
        """The backend, made here (in this thread) on first use if only a factory was given."""
        if self._backend is None:
            assert self._make_backend is not None
            self._backend = self._make_backend()
        return self._backend

    def on_stop(self) -> None:
        self._report_down(f"backend instance {self._index} stopped unexpectedly")
        self._close_backend()
        self._report_released()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        # Pykka stops an actor whose on_receive raised (on_stop is not called then).
        self._report_down(f"backend instance {self._index} stopped unexpectedly: {exception_value!r}")
        self._close_backend()
        self._report_released()

    def _report_released(self) -> None:
        """A retired executor is done: its thread ends and its backend is closed."""
        if not self._retired.is_set() or self._peers is None:
            return
        try:
            self._peers.batcher.tell(ExecutorReleased(self._index, self._incarnation))
        except pykka.ActorDeadError:
            pass  # the whole pipeline is stopping

    def _report_down(self, reason: str) -> None:
        """Unless it was retired on purpose, the batcher must answer what it held."""
        if self._retired.is_set() or self._peers is None:
            return
        try:
            self._peers.batcher.tell(ExecutorDown(self._index, self._incarnation, reason))
        except pykka.ActorDeadError:
            pass  # the whole pipeline is stopping

    def _close_backend(self) -> None:
        if self._backend is None:
            return
        try:
            self._backend.close()
        except Exception:
            log.exception("executor %d: backend close failed", self._index)

    def _run(self, batch: DispatchBatch) -> None:
        assert self._backend is not None and self._spec is not None, "LoadBackend must come first"
        started = self._start(batch)
        previous, self._pending = self._pending, None
        if previous is not None:
            self._finish(previous)
        if self._backend.pipelined and started.failure is None and not self.actor_inbox.empty():
            self._pending = started  # the next batch is here: start it before this one finishes
        else:
            self._finish(started)

    def _finish_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self._finish(pending)

    def _start(self, batch: DispatchBatch) -> _Started:
        backend, spec = self._backend, self._spec
        assert backend is not None and spec is not None
        started = _Started(batch, self._clock.now())
        try:
            items = [r.inputs for r in batch.requests]
            buffers = backend.input_buffers(len(items))
            inputs = join_inputs(items, spec.inputs) if buffers is None else join_into(items, spec.inputs, buffers)
            started.handle = backend.submit(inputs)
        except Exception as e:  # any backend error fails this batch, and only this batch
            started.failure = self._failed(batch, e)
        return started

    def _failed(self, batch: DispatchBatch, e: Exception) -> Failure:
        assert self._backend is not None
        log.warning("executor %d: batch %d failed: %s", self._index, batch.batch_id, e)
        return Failure(Code.INTERNAL, f"backend {self._backend.name!r} failed: {type(e).__name__}: {e}")

    def _finish(self, run: _Started) -> None:
        outboxes, spec, backend = self._outboxes, self._spec, self._backend
        assert outboxes is not None and spec is not None and backend is not None, "Connect and LoadBackend must come first"
        to_batcher, to_session, to_metrics = outboxes
        batch, requests, failure, outputs = run.batch, run.batch.requests, run.failure, None
        if failure is None:
            try:
                outputs = split_outputs(backend.collect(run.handle), spec.outputs, len(requests))
            except Exception as e:  # any backend error fails this batch, and only this batch
                failure = self._failed(batch, e)
        if self._retired.is_set():
            return  # given up on while it ran: its requests were answered DEADLINE_EXCEEDED
        completed_at = self._clock.now()
        compute_s = completed_at - run.started
        to_batcher.tell(ExecutorFree(self._index, self._incarnation, compute_s))
        if outputs is not None:
            to_session.tell(BatchSucceeded(requests, outputs, BatchTiming(batch, compute_s, completed_at)))
        else:
            assert failure is not None
            to_session.tell(BatchFailed(tuple((r, failure) for r in requests), completed_at))
        dispatched_at = batch.dispatched_at
        to_metrics.tell(
            BatchExecuted(
                self._index,
                len(requests),
                compute_s,
                outputs is not None,
                dispatched_at - batch.enqueued_at[0],
                tuple(dispatched_at - t for t in batch.enqueued_at),
            )
        )
