"""The event-loop side of the streams.

Requests read from any stream during one pass of the event loop are sent to the
session actor as ONE message: the flush is scheduled with `call_soon`, so it runs
after every reader that woke in the same pass. Answers come back from actor
threads once per batch and are routed to their stream's outbox here.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pykka

from actors.messages import AnswersDropped, RequestsReceived, ResponsesWritten, StreamClosed, StreamInput
from actors.session import Outgoing
from sidecar.clock import Clock
from sidecar.core.status import Code, Failure
from sidecar.rpc.convert import error_response

NOT_READY = Failure(Code.UNAVAILABLE, "the sidecar is starting: the model is not loaded yet; retry shortly")


class Stream:
    """One Infer call's state, touched only on the event loop."""

    __slots__ = ("id", "outbox", "unknown_cancels", "wakeup", "outstanding", "reading_done", "draining", "deadline")

    def __init__(self, stream_id: int, draining: bool, deadline: float) -> None:
        self.id = stream_id
        self.deadline = deadline  # the call's gRPC deadline, absolute; inf if none
        self.outbox: list[Outgoing] = []
        self.unknown_cancels: list[int] = []
        self.wakeup = asyncio.Event()
        self.outstanding = 0  # requests sent on, not yet answered
        self.reading_done = False
        self.draining = draining

    @property
    def finished(self) -> bool:
        """Everything it sent is answered and written, and no more will come (or
        the server is draining, which ends a stream as soon as it is answered)."""
        return (self.reading_done or self.draining) and self.outstanding == 0 and not self.outbox and not self.unknown_cancels


class Ingress:
    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock) -> None:
        self._loop = loop
        self._clock = clock
        self._session: pykka.ActorRef[Any] | None = None
        self._metrics: pykka.ActorRef[Any] | None = None
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

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def outstanding(self) -> int:
        return sum(s.outstanding for s in self._streams.values())

    def open_stream(self, time_remaining_s: float | None = None) -> Stream:
        deadline = math.inf if time_remaining_s is None else self._clock.now() + time_remaining_s
        stream = Stream(next(self._ids), self._draining, deadline)
        self._streams[stream.id] = stream
        self._idle.clear()
        return stream

    def start_draining(self) -> None:
        """From now on every stream ends as soon as all it sent is answered."""
        self._draining = True
        for stream in self._streams.values():
            stream.draining = True
            stream.wakeup.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Waits until no stream is open; False if `timeout_s` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True

    def submit(self, stream: Stream, requests: Sequence[Any], cancels: Sequence[int] = ()) -> None:
        if self._session is None:
            now = self._clock.now()
            # Not counted: no pipeline, no metrics yet.
            stream.outbox.extend((error_response(r.request_id, NOT_READY), now, now, None) for r in requests)
            stream.unknown_cancels.extend(cancels)
            stream.wakeup.set()
            return
        stream.outstanding += len(requests)
        self._pending.append(StreamInput(stream.id, requests, cancels, stream.deadline))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def close_stream(self, stream: Stream, reason: str) -> None:
        """The call is over (answered, or its client went away): forget it."""
        self._flush()  # its last requests must reach the session before the close
        if self._streams.pop(stream.id, None) is not None and self._session is not None:
            self._session.tell(StreamClosed(stream.id, reason))
        self._dropped(stream.outbox)
        stream.outbox = []
        if not self._streams:
            self._idle.set()

    def deliver(self, out: dict[int, list[Outgoing]], unknown_cancels: dict[int, list[int]] | None = None) -> None:
        """Called from actor threads."""
        self._loop.call_soon_threadsafe(self._route, out, unknown_cancels)

    def written(self, sent: list[Outgoing]) -> None:
        """The servicer wrote these: record their end-to-end and delivery times.

        Like requests, the samples of one loop pass travel to the metrics actor as
        one message, whatever the number of streams and messages written.
        """
        if self._metrics is None or not sent:
            return
        now = self._clock.now()
        self._end_to_end.extend([now - r for _, r, _, _ in sent])
        self._delivery.extend([now - c for _, _, c, _ in sent])
        if not self._written_flush_scheduled:
            self._written_flush_scheduled = True
            self._loop.call_soon(self._flush_written)

    def _flush_written(self) -> None:
        self._written_flush_scheduled = False
        assert self._metrics is not None
        end_to_end, delivery = tuple(self._end_to_end), tuple(self._delivery)
        self._end_to_end.clear()
        self._delivery.clear()
        self._metrics.tell(ResponsesWritten(end_to_end, delivery))

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._pending:
            return
        items, self._pending = self._pending, []
        assert self._session is not None, "attach() before serving"
        self._session.tell(RequestsReceived(items, self._clock.now()))

    def _route(self, out: dict[int, list[Outgoing]], unknown_cancels: dict[int, list[int]] | None) -> None:
        for stream_id, ids in (unknown_cancels or {}).items():
            stream = self._streams.get(stream_id)
            if stream is not None:
                stream.unknown_cancels.extend(ids)
                stream.wakeup.set()
        for stream_id, answers in out.items():
            stream = self._streams.get(stream_id)
            if stream is None:
                self._dropped(answers)  # its call ended while these were on their way
                continue
            stream.outbox.extend(answers)
            stream.outstanding -= len(answers)
            stream.wakeup.set()

    def _dropped(self, answers: list[Outgoing]) -> None:
        """The session counted these answers, but their client will never see them."""
        if not answers or self._metrics is None:
            return
        outcomes = Counter(outcome for _, _, _, outcome in answers if outcome is not None)
        if outcomes:
            self._metrics.tell(AnswersDropped(tuple(outcomes.items())))
