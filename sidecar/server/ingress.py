"""The event-loop side of the streams.

Requests read from any stream during one pass of the event loop are sent to the
session actor as ONE message: the flush is scheduled with `call_soon`, so it runs
after every reader that woke in the same pass; passes that come while the session
is still busy share one wake-up of it (actors/inbox.py). Answers come back from
actor threads once per batch and are routed to their stream's outbox here; the
loop is woken once for all the answers that arrive while it is busy.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

import pykka

from actors.inbox import Inbox, LazyInbox
from actors.metrics import reporting_to
from actors.messages import AnswersDropped, RequestsReceived, ResponsesWritten, StreamClosed, StreamInput
from actors.session import Outgoing
from sidecar.clock import Clock
from sidecar.core.status import Code, Failure
from sidecar.core.stream import BadFrame, Drain, Gone, Phase, Read, ReadEnded, StreamError, StreamLifecycle
from sidecar.core.answer import Answer
from sidecar.core.request import Arrival

log = logging.getLogger(__name__)

NOT_READY = Failure(Code.UNAVAILABLE, "the sidecar is starting: the model is not loaded yet; retry shortly")


def batch_item_count(batches: Sequence[Any]) -> int:
    """Requests carried in batch-major form (InferBatch messages)."""
    return sum(len(b.request_ids) for b in batches)


class Stream:
    """One call, touched only on the event loop. What it has read, owes and wrote
    is its lifecycle's business (sidecar/core/stream.py). It holds core answers:
    its writer turns them into its wire format."""

    __slots__ = ("id", "life", "wakeup", "readable", "deadline")

    def __init__(self, stream_id: int, window: int, deadline: float) -> None:
        self.id = stream_id
        self.deadline = deadline  # the call's gRPC deadline, absolute; inf if none
        self.life: StreamLifecycle[Outgoing] = StreamLifecycle(window)
        self.wakeup = asyncio.Event()  # the writer has something to do
        self.readable = asyncio.Event()  # the reader may go on

    def wake(self) -> None:
        self.wakeup.set()
        if self.life.may_read or self.life.phase is not Phase.OPEN:
            self.readable.set()


class Ingress:
    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock, window: int = 1024) -> None:
        self._loop = loop
        self._clock = clock
        self._window = window
        self._session: pykka.ActorRef[Any] | None = None
        self._metrics: pykka.ActorRef[Any] | None = None
        self._to_session: Inbox | None = None
        self._to_metrics: LazyInbox | None = None
        # Answers from actor threads, waiting for the loop; one wake-up at a time.
        self._arrived: deque[tuple[dict[int, list[Outgoing]], dict[int, list[int]] | None]] = deque()
        self._arrival_scheduled = False
        self._streams: dict[int, Stream] = {}
        self._ids = itertools.count(1)
        self._pending: list[StreamInput] = []
        self._flush_scheduled = False
        self._end_to_end: list[float] = []
        self._delivery: list[float] = []
        self._written_flush_scheduled = False
        self._draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    def attach(self, session: pykka.ActorRef[Any], metrics: pykka.ActorRef[Any]) -> None:
        self._session = session
        self._metrics = metrics
        self._to_session, self._to_metrics = Inbox(session), reporting_to(metrics)

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def outstanding(self) -> int:
        return sum(s.life.outstanding for s in self._streams.values())

    def sizes(self) -> dict[str, int]:
        """Its long-lived structures' sizes, for the memory report (docs/soak.md)."""
        return {
            "streams": len(self._streams),
            "outstanding": self.outstanding,
            "outboxes": sum(s.life.to_write for s in self._streams.values()),
            "pending_inputs": len(self._pending),
            "pending_samples": len(self._end_to_end) + len(self._delivery),
        }

    @property
    def draining(self) -> bool:
        return self._draining

    def open_stream(self, time_remaining_s: float | None = None) -> Stream | None:
        """A new call's stream; None while draining (the call is refused at once,
        so clients that reconnect cannot hold a drain open)."""
        if self._draining:
            return None
        deadline = math.inf if time_remaining_s is None else self._clock.now() + time_remaining_s
        stream = Stream(next(self._ids), self._window, deadline)
        self._streams[stream.id] = stream
        self._idle.clear()
        return stream

    def start_draining(self) -> None:
        """Every stream stops reading and ends once all it read is written back."""
        self._draining = True
        for stream in self._streams.values():
            stream.life.handle(Drain())
            stream.wake()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Waits until no stream is open; False if `timeout_s` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True

    def submit(self, stream: Stream, items: int, arrivals: Sequence[Arrival], cancels: Sequence[int] = ()) -> None:
        """`items`: the requests read (the reader counted them against the window
        already); `arrivals`: those requests, checked against the model."""
        if stream.life.phase is Phase.GONE:
            return  # read as its call died: nobody is left to answer, and it was never counted
        stream.life.handle(Read(items, len(cancels)))
        if self._session is None:
            now = self._clock.now()
            # Not counted: no pipeline, no metrics yet.
            stream.life.answered([Outgoing(Answer(a.request_id, None, NOT_READY), now, now, None) for a in arrivals])
            stream.life.unknown_cancels(cancels)
            stream.wake()
            return
        self._pending.append(StreamInput(stream.id, arrivals, cancels, stream.deadline))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def read_ended(self, stream: Stream) -> None:
        stream.life.handle(ReadEnded())
        stream.wake()

    def bad_frame(self, stream: Stream, detail: str) -> None:
        stream.life.handle(BadFrame(detail))
        stream.wake()

    def close_stream(self, stream: Stream, reason: str) -> None:
        """The call is over (answered, or its client went away): forget it."""
        self._flush()  # its last requests must reach the session before the close
        if self._streams.pop(stream.id, None) is not None and self._session is not None:
            self._session.tell(StreamClosed(stream.id, reason))
        self.dropped(stream.life.handle(Gone()))
        if not self._streams:
            self._idle.set()

    def deliver(self, out: dict[int, list[Outgoing]], unknown_cancels: dict[int, list[int]] | None = None) -> None:
        """Called from actor threads. Same hand-off as actors/inbox.py: the flag is
        cleared before the queue is drained, and set after an append."""
        self._arrived.append((out, unknown_cancels))
        if self._arrival_scheduled:
            return
        self._arrival_scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._route_arrived)
        except RuntimeError:  # the loop is closed: nobody is left to write answers
            self._arrival_scheduled = False
            self._arrived.clear()
            raise

    def _route_arrived(self) -> None:
        self._arrival_scheduled = False
        arrived = self._arrived
        try:
            for _ in range(len(arrived)):
                self._route(*arrived.popleft())
        finally:
            if arrived and not self._arrival_scheduled:  # _route raised: the rest still go
                self._arrival_scheduled = True
                self._loop.call_soon(self._route_arrived)

    def written(self, stream: Stream, sent: Sequence[Outgoing]) -> None:
        """The servicer wrote these: record their end-to-end and delivery times.

        Like requests, the samples of one loop pass travel to the metrics actor as
        one message, whatever the number of streams and messages written.
        """
        stream.life.write_done()
        stream.wake()
        self.delivered(sent)

    def delivered(self, sent: Sequence[Outgoing]) -> None:
        """These answers reached their client (the KServe front ends call this once a
        request's answers, taken earlier, went out as one response)."""
        if self._metrics is None or not sent:
            return
        now = self._clock.now()
        self._end_to_end.extend([now - a.received_at for a in sent])
        self._delivery.extend([now - a.completed_at for a in sent])
        if not self._written_flush_scheduled:
            self._written_flush_scheduled = True
            self._loop.call_soon(self._flush_written)

    def count(self, message: Any) -> None:
        """A count for the metrics actor from the event loop (KServe front ends: what
        they refused before the session saw it, and their calls)."""
        if self._to_metrics is not None:
            self._to_metrics.tell(message)

    def write_failed(self, stream: Stream, taken: Sequence[Outgoing]) -> None:
        """A write raised: those answers and everything else the stream holds are
        dropped, moved from the outcome they were counted as."""
        self.dropped([*taken, *stream.life.write_failed()])
        stream.wake()

    def _flush_written(self) -> None:
        self._written_flush_scheduled = False
        assert self._to_metrics is not None
        end_to_end, delivery = tuple(self._end_to_end), tuple(self._delivery)
        self._end_to_end.clear()
        self._delivery.clear()
        self._to_metrics.tell(ResponsesWritten(end_to_end, delivery))

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._pending:
            return
        items, self._pending = self._pending, []
        assert self._to_session is not None, "attach() before serving"
        self._to_session.tell(RequestsReceived(items, self._clock.now()))

    def _route(self, out: dict[int, list[Outgoing]], unknown_cancels: dict[int, list[int]] | None) -> None:
        for stream_id, ids in (unknown_cancels or {}).items():
            stream = self._streams.get(stream_id)
            if stream is not None:
                stream.life.unknown_cancels(ids)
                stream.wake()
        for stream_id, answers in out.items():
            stream = self._streams.get(stream_id)
            if stream is None:
                self.dropped(answers)  # its call ended while these were on their way
                continue
            try:
                self.dropped(stream.life.answered(answers))
            except StreamError:  # a bug upstream; the counts say where answers went
                log.exception("ingress: stream %d got answers it did not ask for", stream_id)
                self.dropped(answers)
            stream.wake()

    def dropped(self, answers: Sequence[Outgoing]) -> None:
        """The session counted these answers, but their client will never see them
        (the KServe calls too, for answers they took and cannot deliver)."""
        if not answers or self._metrics is None:
            return
        outcomes = Counter(a.outcome for a in answers if a.outcome is not None)
        if outcomes and self._to_metrics is not None:
            self._to_metrics.tell(AnswersDropped(tuple(outcomes.items())))
