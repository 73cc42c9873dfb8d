"""Stream lifecycle: what one Infer call has read, had answered, written and
dropped, whether it may read more, and when and how it ends.

Everything that decides a stream's course lives here; the servicer's reader and
writer and the ingress only feed it events and do what its queries say.

Rules:
- Every request read is answered exactly once: its answer is written, or counted
  dropped (the call died under it). `outstanding` = read - written - dropped.
- Back-pressure: the stream may read only while `outstanding` (plus unknown-cancel
  notices not yet written) is below its window. At the window the reader stops,
  so HTTP/2 flow control holds the client back: a client that never reads costs
  at most its window, plus the requests of the one message read last.
- Reading stops for good when the client half-closes, a message does not parse,
  or the server drains; the first reason is kept, and it gives the call's final
  status. The call ends once everything read is written (`finished`).
- A call that is gone (its client went away, or a write failed) drops what it
  holds and anything still to come.

Transition table (phase after the event; `-` = illegal: StreamError, nothing
changes). Answered, UnknownCancels, Written and WriteFailed never change the
phase except as shown; the counters move as their names say.

    phase \\ event   Read      ReadEnded   BadFrame   Drain      Gone   WriteFailed
    OPEN            OPEN      STOPPED     STOPPED    STOPPED    GONE   GONE
    STOPPED         STOPPED*  STOPPED     STOPPED    STOPPED    GONE   GONE
    GONE            -         GONE        GONE       GONE       GONE   GONE

    (*) only while draining: a read already under way when the drain began
        completes, and what it brought is answered like anything else.

End status of a STOPPED call: client half-closed -> OK; draining -> UNAVAILABLE
(reconnect elsewhere or later); a message that did not parse -> INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

from sidecar.core.status import Code, Failure

T = TypeVar("T")


class Phase(Enum):
    OPEN = "OPEN"
    STOPPED = "STOPPED"
    GONE = "GONE"


class Stop(Enum):
    """Why reading stopped; it decides the final status."""

    CLIENT_DONE = "client half-closed"
    DRAINING = "draining"
    BAD_FRAME = "bad frame"


class StreamError(RuntimeError):
    """An event that is illegal now; the stream is unchanged."""


# ---- events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Read:
    requests: int
    cancels: int = 0


@dataclass(frozen=True, slots=True)
class ReadEnded:
    """The client half-closed its side."""


@dataclass(frozen=True, slots=True)
class BadFrame:
    detail: str  # short, already quoted: it goes to the client as is


@dataclass(frozen=True, slots=True)
class Drain:
    pass


@dataclass(frozen=True, slots=True)
class Gone:
    """The call is over from outside: client cancelled or disconnected."""


PhaseEvent = Read | ReadEnded | BadFrame | Drain | Gone

# The table above, as the code runs it: (phase, event type) -> next phase.
TRANSITIONS: dict[tuple[Phase, type], Phase] = {
    (Phase.OPEN, Read): Phase.OPEN,
    (Phase.OPEN, ReadEnded): Phase.STOPPED,
    (Phase.OPEN, BadFrame): Phase.STOPPED,
    (Phase.OPEN, Drain): Phase.STOPPED,
    (Phase.OPEN, Gone): Phase.GONE,
    (Phase.STOPPED, Read): Phase.STOPPED,  # draining only; checked in handle()
    (Phase.STOPPED, ReadEnded): Phase.STOPPED,
    (Phase.STOPPED, BadFrame): Phase.STOPPED,
    (Phase.STOPPED, Drain): Phase.STOPPED,
    (Phase.STOPPED, Gone): Phase.GONE,
    (Phase.GONE, ReadEnded): Phase.GONE,
    (Phase.GONE, BadFrame): Phase.GONE,
    (Phase.GONE, Drain): Phase.GONE,
    (Phase.GONE, Gone): Phase.GONE,
}

_STOP_OF = {ReadEnded: Stop.CLIENT_DONE, Drain: Stop.DRAINING, BadFrame: Stop.BAD_FRAME}

DRAINING_END = Failure(
    Code.UNAVAILABLE,
    "the sidecar is draining (shutting down): every request this stream sent before now was answered; "
    "send the rest to another instance or after it restarts",
)


@dataclass(frozen=True, slots=True)
class Taken(Generic[T]):
    """One message's worth of what the stream has to write."""

    answers: list[T]
    cancels: list[int]


class StreamLifecycle(Generic[T]):
    """One stream's state; answers are opaque items of type T, packed by size."""

    __slots__ = ("window", "_phase", "_stop", "_detail", "read", "written", "dropped", "_outbox", "_cancels",
                 "_writing", "_writing_cancels")

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self._phase = Phase.OPEN
        self._stop: Stop | None = None
        self._detail = ""
        self.read = 0  # requests read
        self.written = 0  # answers written
        self.dropped = 0  # answers (or requests) that can no longer be written
        self._outbox: deque[T] = deque()
        self._cancels: list[int] = []  # unknown-cancel notices to write
        self._writing = 0  # answers taken for the write under way
        self._writing_cancels = 0

    # ---- queries ----------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def stop(self) -> Stop | None:
        return self._stop

    @property
    def outstanding(self) -> int:
        """Requests read whose answer is neither written nor dropped."""
        return self.read - self.written - self.dropped

    @property
    def unanswered(self) -> int:
        """Requests read whose answer has not reached this stream yet."""
        return self.outstanding - len(self._outbox) - self._writing

    @property
    def may_read(self) -> bool:
        return self._phase is Phase.OPEN and self.outstanding + len(self._cancels) + self._writing_cancels < self.window

    @property
    def to_write(self) -> int:
        """Answers and cancel notices waiting to be written."""
        return len(self._outbox) + len(self._cancels)

    @property
    def has_output(self) -> bool:
        return bool(self._outbox or self._cancels)

    @property
    def finished(self) -> bool:
        """The call may end: it reads no more and owes nothing."""
        if self._phase is Phase.GONE:
            return True
        return self._phase is Phase.STOPPED and self.outstanding == 0 and not self._cancels and not self._writing_cancels

    def end_status(self) -> Failure | None:
        """How a finished call ends: None for OK (or a call that is gone)."""
        if self._stop is Stop.DRAINING:
            return DRAINING_END
        if self._stop is Stop.BAD_FRAME:
            return Failure(Code.INVALID_ARGUMENT, self._detail)
        return None

    # ---- events -------------------------------------------------------------------------

    def handle(self, event: PhaseEvent) -> list[T]:
        """Applies one event; returns the answers it dropped (only Gone drops any)."""
        phase = self._phase
        nxt = TRANSITIONS.get((phase, type(event)))
        if nxt is None or (isinstance(event, Read) and phase is Phase.STOPPED and self._stop is not Stop.DRAINING):
            raise StreamError(f"{type(event).__name__} is illegal in {phase.name} (stopped: {self._stop})")
        dropped: list[T] = []
        match event:
            case Read(requests, _):
                if requests < 0:
                    raise StreamError(f"cannot read {requests} requests")
                self.read += requests
            case Gone():
                dropped = self._drop_outbox()
            case BadFrame(detail) if self._stop is None:
                self._detail = detail
        if self._stop is None and type(event) in _STOP_OF:
            self._stop = _STOP_OF[type(event)]
        self._phase = nxt
        return dropped

    def answered(self, answers: Sequence[T]) -> Sequence[T]:
        """Answers reached the stream; returns those dropped because the call is gone."""
        if len(answers) > self.unanswered:
            raise StreamError(f"{len(answers)} answers for {self.unanswered} unanswered requests")
        if self._phase is Phase.GONE:
            self.dropped += len(answers)
            return answers
        self._outbox.extend(answers)
        return ()

    def unknown_cancels(self, ids: Sequence[int]) -> None:
        if self._phase is not Phase.GONE:
            self._cancels.extend(ids)

    def take(self, budget: int, size: Callable[[T], int]) -> Taken[T]:
        """Up to `budget` bytes of answers (at least one, if any) and the cancel
        notices that fit, for one message; they count as written once Written."""
        if self._writing or self._writing_cancels:
            raise StreamError("a write is already under way")
        outbox, answers = self._outbox, []
        while outbox:
            cost = size(outbox[0])
            if cost > budget and answers:
                break
            budget -= cost
            answers.append(outbox.popleft())
        n = min(len(self._cancels), max(0, budget) // CANCEL_BYTES)
        if not answers and self._cancels:
            n = max(n, 1)
        cancels, self._cancels = self._cancels[:n], self._cancels[n:]
        self._writing, self._writing_cancels = len(answers), len(cancels)
        return Taken(answers, cancels)

    def write_done(self) -> None:
        """The message taken last was written."""
        self.written += self._writing
        self._writing = self._writing_cancels = 0

    def write_failed(self) -> list[T]:
        """The message taken last could not be written: the call is over. Its
        answers are counted dropped; returns the others dropped with them."""
        self.dropped += self._writing
        self._writing = self._writing_cancels = 0
        self._phase = Phase.GONE
        return self._drop_outbox()

    def _drop_outbox(self) -> list[T]:
        items = list(self._outbox)
        self._outbox.clear()
        self._cancels.clear()
        self.dropped += len(items)
        return items


# A cancel notice on the wire: a uint64 varint (up to 10 bytes) and its share of the field.
CANCEL_BYTES = 11
