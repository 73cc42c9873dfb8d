"""Session: per-stream bookkeeping for every stream, in one actor.

One actor serves all streams so that what the event loop read from all of them in
one pass travels on as one message (measured: an actor woken per request saw lists
of ~1.5; one fed per loop pass saw 4-13). It turns the arrivals the edge checked
into requests with uids and deadlines (answering refused ones and ids already in
flight INVALID_ARGUMENT at once), remembers which ids are in flight on which
stream, and routes every answer back to its stream, exactly once. It speaks core
types only: answers leave as `Answer`s, and the edge that owns each stream's wire
format converts them.

Every request gets a uid, unique for the server's life; an answer counts only for
the request with that uid. So a late answer (from a backend that was given up on,
or for a request cancelled or abandoned) can never be taken for the answer to a
newer request that reuses its id. Answers for a stream whose client has gone are
dropped and counted cancelled. It is also where outcomes are counted: every
answer passes through here once.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple


from actors.base import SidecarActor
from actors.inbox import Inbox, LazyInbox, Wake, handle_wake
from actors.metrics import reporting_to
from actors.messages import (
    AbandonAll,
    AdmitRequests,
    BatchFailed,
    BatchSucceeded,
    BatchTiming,
    Connect,
    FailRequests,
    GetSnapshot,
    OutcomesCounted,
    Peers,
    RequestsReceived,
    StreamClosed,
    StreamInput,
    Withdraw,
)
from sidecar.clock import Clock
from sidecar.core.answer import Answer, Timing
from sidecar.core.request import Request
from sidecar.core.status import Code, Failure

log = logging.getLogger(__name__)


class Outgoing(NamedTuple):
    """One answer on its way to a stream. The outcome travels with it, so that an
    answer that can no longer be written is moved from exactly the counter it went
    into. A NamedTuple: one is built per answer on the hot path."""

    answer: Answer  # a core answer: the edge that owns the stream's wire format converts it
    received_at: float
    completed_at: float
    outcome: str | None  # the counter it was counted in; None: counted nowhere (no pipeline yet)

# Answers grouped by stream id, and cancels that named nothing in flight.
Deliver = Callable[[dict[int, list[Outgoing]], dict[int, list[int]]], None]

OUTCOME_BY_CODE = {
    Code.OK: "succeeded",
    Code.RESOURCE_EXHAUSTED: "rejected",
    Code.UNAVAILABLE: "rejected",
    Code.DEADLINE_EXCEEDED: "expired",
    Code.CANCELLED: "cancelled",
    Code.INVALID_ARGUMENT: "invalid",
    Code.INTERNAL: "failed",
}
CANCELLED_BY_CLIENT = Failure(Code.CANCELLED, "cancelled by the client")


class SessionActor(SidecarActor):

    def __init__(self, deliver: Deliver, clock: Clock) -> None:
        super().__init__()
        self._deliver = deliver
        self._clock = clock
        self._peers: Peers | None = None
        self._to_admission: Inbox | None = None
        self._to_metrics: LazyInbox | None = None
        self._uids = itertools.count(1)
        # open streams -> {request id awaiting an answer: (received_at, uid)}
        self._inflight: dict[int, dict[int, tuple[float, int]]] = {}
        self._gone: set[int] = set()  # uids on closed streams: answers dropped, counted cancelled
        self._abandoned: set[int] = set()  # uids answered by AbandonAll: late answers dropped
        self._cancelling: set[int] = set()  # uids the client cancelled: answered CANCELLED

    def on_receive(self, message: Any) -> Any:
        match message:
            case Wake():
                handle_wake(message, self.on_receive)
            case RequestsReceived(items, received_at):
                try:
                    self._received(items, received_at)
                except Exception:  # a bug must not leave requests unanswered
                    log.exception("session: failed to take in %d stream input(s)", len(items))
                    self._fail_inputs(items, received_at)
            case BatchSucceeded(requests, outputs, batch_timing):
                self._answer(self._successes(requests, outputs, batch_timing), batch_timing.completed_at)
            case BatchFailed(failures, completed_at):
                self._answer(((r, Answer(r.request_id, None, f), f.code) for r, f in failures), completed_at)
            case FailRequests(failures):
                self._answer(((r, Answer(r.request_id, None, f), f.code) for r, f in failures), self._clock.now())
            case StreamClosed(stream, reason):
                self._stream_closed(stream, reason)
            case AbandonAll(reason):
                self._abandon_all(reason)
            case Connect(peers):
                self._peers = peers
                self._to_admission, self._to_metrics = Inbox(peers.admission), reporting_to(peers.metrics)
            case GetSnapshot():
                return {
                    "open_streams": len(self._inflight),
                    "inflight": sum(map(len, self._inflight.values())) + len(self._gone),
                    "sizes": {
                        "streams": len(self._inflight),
                        "inflight_ids": sum(map(len, self._inflight.values())),
                        "gone_uids": len(self._gone),
                        "abandoned_uids": len(self._abandoned),
                        "cancelling_uids": len(self._cancelling),
                    },
                }
            case _:
                log.error("session: unexpected message %r", message)
        return None

    # ---- requests in ------------------------------------------------------------------

    def _received(self, items: Sequence[StreamInput], received_at: float) -> None:
        assert self._peers is not None, "Connect must come first"
        accepted: list[Request] = []
        out: dict[int, list[Outgoing]] = {}
        unknown: dict[int, list[int]] = {}
        withdraw: list[tuple[int, int]] = []
        counts: Counter[str] = Counter()
        uids = self._uids
        for item in items:
            stream, stream_deadline = item.stream, item.deadline
            ids = self._inflight.setdefault(stream, {})
            counts["received"] += len(item.arrivals)
            for a in item.arrivals:
                request_id = a.request_id
                if request_id in ids:
                    _refuse(out, counts, stream, (request_id,), _in_flight(request_id), received_at)
                elif a.refused is not None:
                    _refuse(out, counts, stream, (request_id,), a.refused, received_at)
                else:
                    uid = next(uids)
                    timeout = a.timeout_s
                    deadline = stream_deadline if timeout is None else min(stream_deadline, received_at + timeout)
                    accepted.append(Request(stream, request_id, a.inputs, received_at, deadline, a.return_timing, uid))
                    ids[request_id] = (received_at, uid)
            for request_id in item.cancels:
                pending = ids.get(request_id)
                if pending is None:
                    unknown.setdefault(stream, []).append(request_id)
                    continue
                self._cancelling.add(pending[1])
                withdraw.append((stream, request_id))
        assert self._to_admission is not None
        if accepted:
            self._to_admission.tell(AdmitRequests(tuple(accepted)))
        if withdraw:  # queued ones come back CANCELLED; running ones are answered CANCELLED when done
            # Through admission, behind the requests it may name: the batcher must see them first.
            self._to_admission.tell(Withdraw(frozenset(withdraw), CANCELLED_BY_CLIENT.message))
        self._emit(out, counts, unknown)

    def _fail_inputs(self, items: Sequence[StreamInput], received_at: float) -> None:
        """Answers INTERNAL every request of a message that could not be taken in."""
        failure = Failure(Code.INTERNAL, "the sidecar failed to take in this request; it was not run")
        out: dict[int, list[Outgoing]] = {}
        for item in items:
            ids = self._inflight.get(item.stream, {})
            for a in item.arrivals:
                request_id = a.request_id
                pending = ids.get(request_id)
                if pending is not None and pending[0] == received_at:
                    del ids[request_id]  # taken in just before the failure: not sent on
                answer = Answer(request_id, None, failure)
                out.setdefault(item.stream, []).append(Outgoing(answer, received_at, received_at, "failed"))
        n = sum(len(v) for v in out.values())
        self._emit(out, Counter({"received": n, "failed": n}), {})

    # ---- answers out ------------------------------------------------------------------

    def _successes(
        self, requests: Sequence[Request], outputs: Sequence[tuple[bytes, ...]], batch_timing: BatchTiming
    ) -> Iterable[tuple[Request, Answer, Code]]:
        for i, (r, o) in enumerate(zip(requests, outputs)):
            timing = None
            if r.return_timing:
                batch = batch_timing.batch
                timing = Timing(batch.dispatched_at - batch.enqueued_at[i], batch_timing.compute_s, len(requests))
            yield r, Answer(r.request_id, o, None, timing), Code.OK

    def _answer(self, answers: Iterable[tuple[Request, Answer, Code]], completed_at: float) -> None:
        out: dict[int, list[Outgoing]] = {}
        counts: Counter[str] = Counter()
        for request, answer, code in answers:
            uid = request.uid
            ids = self._inflight.get(request.stream)
            pending = ids.get(request.request_id) if ids is not None else None
            if pending is not None and pending[1] == uid:
                del ids[request.request_id]  # type: ignore[union-attr]
                if uid in self._cancelling:
                    self._cancelling.discard(uid)
                    if code is not Code.CANCELLED:  # it ran to the end; the client asked not to get it
                        answer, code = Answer(request.request_id, None, CANCELLED_BY_CLIENT), Code.CANCELLED
                outcome = OUTCOME_BY_CODE[code]
                out.setdefault(request.stream, []).append(Outgoing(answer, request.received_at, completed_at, outcome))
                counts[outcome] += 1
            elif uid in self._gone:
                self._gone.discard(uid)
                self._cancelling.discard(uid)
                counts["cancelled"] += 1
            elif uid in self._abandoned:
                self._abandoned.discard(uid)
            else:
                log.debug("session: late answer for request %s on stream %s dropped", request.request_id, request.stream)
        self._emit(out, counts, {})

    def _stream_closed(self, stream: int, reason: str) -> None:
        ids = self._inflight.pop(stream, None)
        if not ids:
            return
        self._gone.update(uid for _, uid in ids.values())
        assert self._to_admission is not None
        # Through admission, behind this stream's last requests (see _received).
        self._to_admission.tell(Withdraw(frozenset((stream, i) for i in ids), reason))

    def _abandon_all(self, reason: str) -> None:
        failure = Failure(Code.UNAVAILABLE, reason)
        now = self._clock.now()
        out: dict[int, list[Outgoing]] = {}
        for stream, ids in self._inflight.items():
            if ids:
                out[stream] = [
                    Outgoing(Answer(i, None, failure), received_at, now, "failed") for i, (received_at, _) in ids.items()
                ]
                self._abandoned.update(uid for _, uid in ids.values())
                ids.clear()
        n = sum(len(v) for v in out.values())
        if n:
            log.warning("session: %d unanswered request(s) abandoned: %s", n, reason)
        self._emit(out, Counter({"failed": n}) if n else Counter(), {})

    def _emit(self, out: dict[int, list[Outgoing]], counts: Counter[str], unknown: dict[int, list[int]]) -> None:
        # Counted first: once delivered, an answer may reach its client, and a
        # GetMetrics that client makes next must include its count.
        if counts and self._to_metrics is not None:
            self._to_metrics.tell(OutcomesCounted(tuple(counts.items())))
        if out or unknown:
            self._deliver(out, unknown)


def _in_flight(request_id: int) -> str:
    return f"request id {request_id} is already in flight on this stream"


def _refuse(
    out: dict[int, list[Outgoing]], counts: Counter[str], stream: int, request_ids: Sequence[int], why: str, at: float
) -> None:
    """Answers these requests INVALID_ARGUMENT at once, saying why; counted invalid."""
    failure, answers = Failure(Code.INVALID_ARGUMENT, why), out.setdefault(stream, [])
    for request_id in request_ids:
        answers.append(Outgoing(Answer(request_id, None, failure), at, at, "invalid"))
    counts["invalid"] += len(request_ids)
