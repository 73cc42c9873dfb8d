"""The event-loop side of the streams.

Requests read from any stream during one pass of the event loop are sent to the
session actor as ONE message: the flush is scheduled with `call_soon`, so it runs
after every reader that woke in the same pass. Answers come back from actor
threads once per batch and are routed to their stream's outbox here.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

import pykka

from actors.messages import RequestsReceived, StreamClosed
from sidecar.clock import Clock


class Stream:
    """One Infer call's state, touched only on the event loop."""

    __slots__ = ("id", "outbox", "wakeup", "outstanding", "reading_done")

    def __init__(self, stream_id: int) -> None:
        self.id = stream_id
        self.outbox: list[Any] = []
        self.wakeup = asyncio.Event()
        self.outstanding = 0  # requests sent on, not yet answered
        self.reading_done = False

    @property
    def finished(self) -> bool:
        return self.reading_done and self.outstanding == 0 and not self.outbox


class Ingress:
    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock) -> None:
        self._loop = loop
        self._clock = clock
        self._session: pykka.ActorRef[Any] | None = None
        self._streams: dict[int, Stream] = {}
        self._ids = itertools.count(1)
        self._pending: list[tuple[int, Sequence[Any]]] = []
        self._flush_scheduled = False

    def attach(self, session: pykka.ActorRef[Any]) -> None:
        self._session = session

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def open_stream(self) -> Stream:
        stream = Stream(next(self._ids))
        self._streams[stream.id] = stream
        return stream

    def submit(self, stream: Stream, requests: Sequence[Any]) -> None:
        stream.outstanding += len(requests)
        self._pending.append((stream.id, requests))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def close_stream(self, stream: Stream, reason: str) -> None:
        """The call is over (answered, or its client went away): forget it."""
        self._flush()  # its last requests must reach the session before the close
        if self._streams.pop(stream.id, None) is not None and self._session is not None:
            self._session.tell(StreamClosed(stream.id, reason))

    def deliver(self, out: dict[int, list[Any]]) -> None:
        """Called from actor threads."""
        self._loop.call_soon_threadsafe(self._route, out)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._pending:
            return
        items, self._pending = self._pending, []
        assert self._session is not None, "attach() before serving"
        self._session.tell(RequestsReceived(items, self._clock.now()))

    def _route(self, out: dict[int, list[Any]]) -> None:
        for stream_id, responses in out.items():
            stream = self._streams.get(stream_id)
            if stream is None:
                continue  # its call ended while these were on their way
            stream.outbox.extend(responses)
            stream.outstanding -= len(responses)
            stream.wakeup.set()
