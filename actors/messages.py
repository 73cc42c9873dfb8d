"""Every message the actors exchange, in one place.

Messages are frozen, slotted dataclasses; hot-path messages carry lists of
requests, never one. Where a core event or action already says exactly what a
message must say, it travels as is (re-exported below) instead of being copied
into a twin class. They carry core types only: requests come in as Arrivals and
answers leave as Answers (sidecar/core/); no wire format reaches an actor.

Flow:  ingress -RequestsReceived-> session -AdmitRequests-> admission
       admission -RequestsAdmitted-> batcher -DispatchBatch-> executor
       executor -BatchSucceeded / BatchFailed-> session -> ingress (the event loop)
       executor -ExecutorFree-> batcher -QueueReleased, ServiceRate-> admission
       executor -ExecutorLoaded, ExecutorDown, ExecutorReleased-> batcher
       batcher -ReplaceExecutor-> executor pool -LoadBackend-> a new executor
       anyone -FailRequests-> session;  session -Withdraw-> admission -> batcher
       session, executor, batcher, ingress -> metrics (OutcomesCounted, BatchExecuted,
       QueueDepth, ResponsesWritten, AnswersDropped)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pykka

from sidecar.core.admission import Admitted
from sidecar.core.batcher import (
    DispatchBatch,
    Drain,
    ExecutorDown,
    ExecutorFree,
    ExecutorLoadFailed,
    ExecutorReleased,
    ExecutorUp,
    FailRequests,
    QueueReleased,
    RequestsAdmitted,
    ServiceRate,
    TimerFired,
    Withdraw,
)
from sidecar.core.request import Arrival, Request
from sidecar.core.status import Failure

if TYPE_CHECKING:
    from sidecar.backends.base import BackendInfo

__all__ = [
    "AbandonAll",
    "AdmitRequests",
    "Admitted",
    "AnswersDropped",
    "BatchExecuted",
    "BatchFailed",
    "BatchSucceeded",
    "BatchTiming",
    "Connect",
    "DispatchBatch",
    "Drain",
    "ExecutorDown",
    "ExecutorFree",
    "ExecutorLoadFailed",
    "ExecutorLoaded",
    "ExecutorReleased",
    "ExecutorUp",
    "Executors",
    "FailRequests",
    "FlushMetrics",
    "GetCounts",
    "GetSnapshot",
    "KServeAnswered",
    "LoadBackend",
    "OutcomesCounted",
    "Peers",
    "QueueDepth",
    "QueueReleased",
    "RegisterSource",
    "RequestsAdmitted",
    "RequestsReceived",
    "ResponsesWritten",
    "ServiceRate",
    "StreamClosed",
    "StreamInput",
    "TimerFired",
    "Withdraw",
]


@dataclass(frozen=True, slots=True)
class Peers:
    """Who talks to whom; handed to every actor once, before any traffic."""

    session: pykka.ActorRef[Any]
    admission: pykka.ActorRef[Any]
    batcher: pykka.ActorRef[Any]
    executors: Executors
    metrics: pykka.ActorRef[Any]


class Executors(Protocol):
    """What the batcher actor needs of the executor instances, defined on the actors'
    side: the server's ExecutorPool (sidecar/server/executor_pool.py) provides it,
    so the actors never import the server layer that starts them."""

    def ref(self, index: int) -> pykka.ActorRef[Any]:
        """The instance's current actor."""
        ...

    def replace(self, index: int, incarnation: int) -> None:
        """Retires the instance's actor and starts a fresh one under `incarnation`."""
        ...

    def retire(self, index: int) -> None:
        """What the instance's actor finishes from now on is dropped."""
        ...


@dataclass(frozen=True, slots=True)
class Connect:
    peers: Peers


# ---- ingress -> session ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamInput:
    """What one stream sent in one event-loop pass."""

    stream: int
    arrivals: Sequence[Arrival]  # its requests, checked against the model by the edge that read them
    cancels: Sequence[int]  # request ids to cancel
    deadline: float  # the stream's own gRPC deadline (absolute), math.inf if none


@dataclass(frozen=True, slots=True)
class KServeAnswered:
    """KServe requests a front end answered (each of N items; its items are
    counted as the native requests they ran as)."""

    protocol: str  # "grpc" or "http"
    requests: int
    failed: int


@dataclass(frozen=True, slots=True)
class RequestsReceived:
    """Everything read from all streams in one event-loop pass."""

    items: Sequence[StreamInput]
    received_at: float


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """The stream's client is gone: withdraw what it still has queued."""

    stream: int
    reason: str


@dataclass(frozen=True, slots=True)
class AbandonAll:
    """Drain timed out: answer everything still unanswered UNAVAILABLE, now."""

    reason: str


# ---- session -> admission ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdmitRequests:
    requests: tuple[Request, ...]


# ---- executor -> session -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchTiming:
    batch: DispatchBatch  # carries enqueued_at per request and dispatched_at
    compute_s: float
    completed_at: float


@dataclass(frozen=True, slots=True)
class BatchSucceeded:
    requests: tuple[Request, ...]
    outputs: Sequence[tuple[bytes, ...]]  # per request (same order): bytes per model output
    timing: BatchTiming


@dataclass(frozen=True, slots=True)
class BatchFailed:
    """The backend raised or returned outputs that do not fit: fail the whole batch."""

    failures: tuple[tuple[Request, Failure], ...]
    completed_at: float


# ---- -> metrics --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutcomesCounted:
    """Increments by outcome name: received, succeeded, rejected, expired, ..."""

    counts: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class BatchExecuted:
    executor: int
    size: int
    compute_s: float
    ok: bool
    formation_s: float  # oldest request enqueued -> batch dispatched
    queue_waits_s: tuple[float, ...]  # per request: enqueued -> dispatched


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """Requests queued in the batcher now; sent when it changes."""

    depth: int


@dataclass(frozen=True, slots=True)
class ResponsesWritten:
    """One response message written by the event loop: per-response stage times."""

    end_to_end_s: tuple[float, ...]  # received -> written
    delivery_s: tuple[float, ...]  # answer known -> written


@dataclass(frozen=True, slots=True)
class AnswersDropped:
    """Answers counted by the session whose stream was gone before they could be
    written: move them from their outcome to `cancelled`."""

    outcomes: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class RegisterSource:
    """A sender's lazy inbox (actors/inbox.py) for the metrics actor to drain."""

    inbox: Any


@dataclass(frozen=True, slots=True)
class FlushMetrics:
    """ask() only: take everything the lazy inboxes hold, then answer (before a read)."""


@dataclass(frozen=True, slots=True)
class GetCounts:
    """ask() only: the metrics actor answers with a dict snapshot."""


@dataclass(frozen=True, slots=True)
class GetSnapshot:
    """ask() only: an actor answers with a small dict describing its state (tests, health)."""


@dataclass(frozen=True, slots=True)
class LoadBackend:
    """The executor loads its backend in its own thread (CUDA contexts belong to the
    thread that made them); a replacement also makes its backend there, with the
    factory it was started with. Asked at start-up, it answers with its BackendInfo;
    a replacement is told, and reports to `reply_to` with ExecutorLoaded."""

    reply_to: pykka.ActorRef[Any] | None = None


@dataclass(frozen=True, slots=True)
class ExecutorLoaded:
    """A replacement executor has loaded its backend (info) or failed to (error)."""

    executor: int
    incarnation: int
    info: BackendInfo | None
    error: str | None
