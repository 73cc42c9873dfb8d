"""The executor actors, by index, and how a hung or dead one is replaced.

The batcher decides (its core answers ReplaceExecutor, and schedules the retries
of a failed load); the pool carries it out: it retires the old actor, so that
whatever that actor still finishes is dropped instead of answering requests that
were already answered, and starts a fresh actor with only the backend factory.
The new actor makes its backend instance and loads it in its own thread, then
reports ExecutorLoaded to the batcher; nothing slow runs on the caller's thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pykka

from actors.executor import ExecutorActor
from actors.messages import Connect, LoadBackend
from sidecar.backends.base import Backend
from sidecar.clock import Clock

if TYPE_CHECKING:
    from actors.messages import Peers


@dataclass(slots=True)
class _Handle:
    ref: pykka.ActorRef[Any]
    incarnation: int
    retired: threading.Event


class ExecutorPool:
    def __init__(self, make_backend: Callable[[], Backend], clock: Clock, max_batch: int | None = None) -> None:
        self._make_backend = make_backend
        self._clock = clock
        self._max_batch = max_batch  # what each instance warms up to when it loads
        self._lock = threading.Lock()
        self._handles: dict[int, _Handle] = {}
        self.peers: Peers | None = None  # set once the pipeline is wired

    def start(self, index: int, incarnation: int = 0, backend: Backend | None = None) -> pykka.ActorRef[Any]:
        """Starts executor `index`: on `backend`, or (none given) on one it makes itself
        with the factory, in its own thread, when it is told LoadBackend."""
        retired = threading.Event()
        ref = ExecutorActor.start(
            index, incarnation, backend, self._clock, retired, self._make_backend, max_batch=self._max_batch
        )
        with self._lock:
            self._handles[index] = _Handle(ref, incarnation, retired)
        return ref

    def replace(self, index: int, incarnation: int) -> None:
        """Retires executor `index` and starts its successor, which makes and loads its
        backend and then tells the batcher ExecutorLoaded. Returns at once."""
        assert self.peers is not None, "wire the pipeline first"
        self.retire(index)
        ref = self.start(index, incarnation)
        ref.tell(Connect(self.peers))
        ref.tell(LoadBackend(reply_to=self.peers.batcher))

    def ref(self, index: int) -> pykka.ActorRef[Any]:
        with self._lock:
            return self._handles[index].ref

    def refs(self) -> list[pykka.ActorRef[Any]]:
        with self._lock:
            return [h.ref for h in self._handles.values()]

    def retire(self, index: int) -> None:
        with self._lock:
            handle = self._handles.get(index)
        if handle is not None:
            handle.retired.set()
            handle.ref.stop(block=False)  # queued behind a hung call, if any: it may never run

    def retire_all(self) -> None:
        """What every executor finishes from now on is dropped (the pipeline is stopping,
        or the sidecar failed)."""
        with self._lock:
            handles = list(self._handles.values())
        for h in handles:
            h.retired.set()
