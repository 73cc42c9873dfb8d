"""KServe calls on the event loop: each gRPC ModelInfer, HTTP infer or
ModelStreamInfer call is a stream of the ingress, like a native Infer call, so
admission, the batcher, drain, deadlines, metrics and the session's bookkeeping
treat its items exactly as theirs.

A KServe request of N items is sent on as one native InferBatch of N items
(ids given out by sidecar/core/kserve_groups.py); its N answers come back
through the stream's lifecycle and are gathered into one answer. An answer
taken from the lifecycle frees its window at once; it counts as delivered
(end-to-end latency) when its request's answer is written, and as dropped if
that write fails.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import replace

from actors.messages import KServeAnswered, OutcomesCounted
from actors.session import Outgoing
from sidecar.core.kserve_groups import GroupAnswer, GroupError, Groups
from sidecar.core.kserve_tensors import Items, KTensor, as_items, datatype_of
from sidecar.core.request import Arrival
from sidecar.core.quote import quote
from sidecar.core.status import Code, Failure
from sidecar.core.tensors import InvalidTensors, TensorSpec
from sidecar.kserve.types import KRequest, KResult, Model
from sidecar.server.ingress import NOT_READY, Ingress, Stream

# Neither lasts long: a hint keeps retrying clients (Flink's provider on a 503) from spinning.
UNAVAILABLE_RETRY_S = 1.0
DRAINING = Failure(
    Code.UNAVAILABLE,
    "the sidecar is draining (shutting down) and takes no new requests; retry on another instance or after it restarts",
    retry_after_s=UNAVAILABLE_RETRY_S,
)
LOADING = replace(NOT_READY, retry_after_s=UNAVAILABLE_RETRY_S)
# A request's own timeout, at most: beyond it a Duration overflows, and no client waits days.
MAX_TIMEOUT_S = 86_400.0
_ALL = 1 << 62  # a take budget no outbox reaches
log = logging.getLogger(__name__)


class Call:
    """One KServe call's stream and the requests in flight on it (event loop only)."""

    def __init__(self, ingress: Ingress, stream: Stream, model: Model, protocol: str, *, early: bool) -> None:
        self._ingress, self.stream, self._model = ingress, stream, model
        self._protocol, self._early = protocol, early
        self._groups: Groups[int] = Groups()
        self._requests: dict[int, tuple[KRequest, Items]] = {}
        self._answers: dict[int, list[Outgoing]] = {}
        self._ready: deque[tuple[int, KResult, list[Outgoing]]] = deque()
        self._tags = 0
        # Taken off the stream's lifecycle (so its window no longer counts them) but
        # not yet written or dropped: items of requests still gathering, results
        # waiting for the writer or being written (a refusal, with no items, is one).
        self._unwritten = 0

    @property
    def pending(self) -> int:
        """Requests sent on and not answered yet."""
        return len(self._requests)

    @property
    def may_read(self) -> bool:
        """The stream's window has room for what it has read and not written back,
        this call's own holdings included: a client that never reads holds at most
        a window of items (or of refusals), as on Infer."""
        life = self.stream.life
        return life.may_read and life.outstanding + self._unwritten < life.window

    def _released(self, n: int) -> None:
        self._unwritten -= n
        if self.may_read:
            self.stream.readable.set()

    def refuse(self, request_id: str, message: str) -> int:
        """A request that could not even be read: answered INVALID_ARGUMENT under a new tag."""
        self._tags += 1
        self._refused(self._tags, request_id, Failure(Code.INVALID_ARGUMENT, message))
        return self._tags

    def _refused(self, tag: int, request_id: str, failure: Failure) -> None:
        count_refused(self._ingress, None, "invalid")
        self._unwritten += 1
        self._finish(tag, KResult(request_id, failure=failure), [])
        self.stream.wake()

    def send(self, request: KRequest) -> int:
        """Checks `request` and sends it on; returns its tag. A request that does not
        fit is answered at once (INVALID_ARGUMENT or NOT_FOUND) under its tag."""
        self._tags += 1
        tag = self._tags
        model, stream = self._model, self.stream
        try:
            failure = model.resolve(request.model_name, request.model_version)
            if failure is None:
                items = as_items(request.inputs, request.outputs, model.spec, min(model.max_items, stream.life.window))
                timeout = request.timeout_s
                if timeout is not None and not 0 < timeout <= MAX_TIMEOUT_S:
                    raise InvalidTensors(f"timeout must be positive and at most {MAX_TIMEOUT_S:g} s, got {timeout:g} s")
        except InvalidTensors as e:
            failure = Failure(Code.INVALID_ARGUMENT, f"request {quote(request.id)}: {e}" if request.id else str(e))
        if failure is not None:
            self._refused(tag, request.id, failure)
            return tag
        ids = self._groups.open(tag, items.n, early=self._early)
        self._requests[tag] = (request, items)
        # Item i of each input is its i-th slice: views, not copies.
        whole = [memoryview(data) for data in items.inputs]
        sizes = [s.nbytes for s in model.spec.inputs]
        timeout = request.timeout_s
        arrivals = [
            Arrival(request_id, tuple(m[i * size : (i + 1) * size] for m, size in zip(whole, sizes)), timeout)
            for i, request_id in enumerate(ids)
        ]
        self._ingress.submit(stream, items.n, arrivals)
        return tag

    async def results(self) -> list[tuple[int, KResult, list[Outgoing]]]:
        """The next answers ready, with what each was made of (for `delivered`); an
        empty list once the stream has nothing more to give."""
        stream = self.stream
        life = stream.life
        while True:
            if life.has_output:
                taken = life.take(_ALL, _one)
                self._unwritten += len(taken.answers)  # held here now, not in the lifecycle
                self._ingress.written(stream, [])  # counted delivered when their result is
                for outgoing in taken.answers:
                    self._take(outgoing)
            if self._ready:
                ready = list(self._ready)
                self._ready.clear()
                return ready
            if life.finished:
                return []
            stream.wakeup.clear()
            await stream.wakeup.wait()

    def _take(self, outgoing: Outgoing) -> None:
        item = outgoing.answer
        request_id = item.request_id
        try:
            tag = self._groups.tag(request_id)
            answer = self._groups.answered(request_id, item.outputs, item.failure)
        except GroupError:  # a bug upstream; the counts say where the answer went
            log.exception("kserve: stream %d got an answer for item %d it did not ask for", self.stream.id, request_id)
            self._drop([outgoing])
            return
        if tag not in self._requests:  # left over from a request answered early: never sent
            self._drop([outgoing])
            return
        parts = self._answers.setdefault(tag, [])
        parts.append(outgoing)
        if answer is None:
            return
        request, items = self._requests.pop(tag)
        del self._answers[tag]
        self._finish(tag, self._result(answer, request, items), parts)

    def _finish(self, tag: int, result: KResult, parts: list[Outgoing]) -> None:
        if result.failure is not None and parts:
            # The client sees one error: the item that failed first is it; the
            # others (answered or not) never reach anyone, so they count cancelled.
            first = next((p for p in parts if p.outcome != "succeeded"), parts[0])
            self._drop([p for p in parts if p is not first])
            parts = [first]
        self._ready.append((tag, result, parts))
        self._ingress.count(KServeAnswered(self._protocol, 1, int(result.failure is not None)))

    def _result(self, answer: GroupAnswer[int], request: KRequest, items: Items) -> KResult:
        if answer.failure is not None:
            return KResult(request.id, failure=answer.failure)
        assert answer.outputs is not None
        by_name = {s.name: data for s, data in zip(self._model.spec.outputs, answer.outputs)}
        return KResult(request.id, tuple(_tensor(s, items.n, by_name[s.name]) for s in items.outputs))

    def close(self) -> None:
        """The call is over: what it still holds (parts of requests not complete,
        answers not written) will never reach the client, so it counts as dropped."""
        held = [p for parts in self._answers.values() for p in parts]
        held += [p for _, _, parts in self._ready for p in parts]
        self._answers.clear()
        self._ready.clear()
        self._requests.clear()
        self._unwritten = 0
        self._ingress.dropped(held)

    def _drop(self, parts: list[Outgoing]) -> None:
        self._ingress.dropped(parts)
        self._released(len(parts))

    def delivered(self, parts: list[Outgoing]) -> None:
        """A result went out: its items count as written (end-to-end latency)."""
        self._ingress.delivered(parts)
        self._released(len(parts) or 1)

    def undelivered(self, parts: list[Outgoing]) -> None:
        """A result could not be written: its items count as dropped."""
        self._ingress.dropped(parts)
        self._released(len(parts) or 1)


def count_refused(ingress: Ingress, protocol: str | None, outcome: str) -> None:
    """A request answered before the session saw it (`invalid`: it could not be
    read; `rejected`: the front end was full) counts as one item received with that
    outcome, its items never known, and, given its protocol, as a KServe request
    that failed (a Call counts its own when done)."""
    ingress.count(OutcomesCounted((("received", 1), (outcome, 1))))
    if protocol is not None:
        ingress.count(KServeAnswered(protocol, 1, 1))


async def infer_once(
    ingress: Ingress, model: Model | None, request: KRequest, protocol: str, time_remaining_s: float | None = None
) -> KResult:
    """One unary request (gRPC ModelInfer, HTTP infer) on a stream of its own. It is
    answered at its first failed item; closing the stream then withdraws the rest."""
    if model is None:
        return KResult(request.id, failure=LOADING)
    stream = ingress.open_stream(time_remaining_s)
    if stream is None:
        return KResult(request.id, failure=DRAINING)
    reason = "client went away"
    call = Call(ingress, stream, model, protocol, early=True)
    try:
        call.send(request)
        ingress.read_ended(stream)
        ready = await call.results()
        reason = "answered"
        assert ready, "a stream with a request sent ends only once it is answered"
        _, result, parts = ready[0]
        call.delivered(parts)
        return result
    finally:
        call.close()
        ingress.close_stream(stream, reason)


def _tensor(spec: TensorSpec, n: int, data: bytes) -> KTensor:
    return KTensor(spec.name, datatype_of(spec), (n, *spec.shape), data)


def _one(_: Outgoing) -> int:
    return 1
