"""Executor actor: one per backend instance, running its batches one at a time.

The blocking backend call runs on this actor's own thread, so the rest of the
pipeline keeps moving; the GIL is released by real backends (numpy, CUDA) and by
the mock's sleep. A failing batch fails exactly its own requests.
"""

from __future__ import annotations

import logging
from typing import Any

import pykka

from actors.messages import (
    BatchExecuted,
    BatchFailed,
    BatchSucceeded,
    BatchTiming,
    Connect,
    DispatchBatch,
    ExecutorFree,
    LoadBackend,
    Peers,
)
from sidecar.backends.base import Backend
from sidecar.clock import Clock
from sidecar.core.status import Code, Failure
from sidecar.core.tensors import ModelSpec, join_inputs, split_outputs

log = logging.getLogger(__name__)


class ExecutorActor(pykka.ThreadingActor):
    # A hung backend call must not keep the process alive after shutdown.
    use_daemon_thread = True

    def __init__(self, index: int, backend: Backend, clock: Clock) -> None:
        super().__init__()
        self._index = index
        self._backend = backend
        self._clock = clock
        self._spec: ModelSpec | None = None
        self._peers: Peers | None = None

    def on_receive(self, message: Any) -> Any:
        match message:
            case DispatchBatch():
                self._run(message)
            case LoadBackend():
                info = self._backend.load()
                self._spec = info.spec
                return info
            case Connect(peers):
                self._peers = peers
            case _:
                log.error("executor %d: unexpected message %r", self._index, message)
        return None

    def on_stop(self) -> None:
        try:
            self._backend.close()
        except Exception:
            log.exception("executor %d: backend close failed", self._index)

    def _run(self, batch: DispatchBatch) -> None:
        peers, spec = self._peers, self._spec
        assert peers is not None and spec is not None, "Connect and LoadBackend must come first"
        requests = batch.requests
        started = self._clock.now()
        outputs = None
        try:
            inputs = join_inputs([r.inputs for r in requests], spec.inputs)
            outputs = split_outputs(self._backend.infer(inputs), spec.outputs, len(requests))
        except Exception as e:  # any backend error fails this batch, and only this batch
            log.warning("executor %d: batch %d failed: %s", self._index, batch.batch_id, e)
            failure = Failure(Code.INTERNAL, f"backend {self._backend.name!r} failed: {type(e).__name__}: {e}")
        completed_at = self._clock.now()
        compute_s = completed_at - started
        peers.batcher.tell(ExecutorFree(self._index, compute_s))
        if outputs is not None:
            peers.session.tell(BatchSucceeded(requests, outputs, BatchTiming(batch, compute_s, completed_at)))
        else:
            peers.session.tell(BatchFailed(tuple((r, failure) for r in requests), completed_at))
        dispatched_at = batch.dispatched_at
        peers.metrics.tell(
            BatchExecuted(
                self._index,
                len(requests),
                compute_s,
                outputs is not None,
                dispatched_at - batch.enqueued_at[0],
                tuple(dispatched_at - t for t in batch.enqueued_at),
            )
        )
