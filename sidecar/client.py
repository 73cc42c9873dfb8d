"""An asyncio client over one Infer stream, that never leaves a caller waiting without a bound.

It pipelines: `submit()` returns a future at once, and a sender task packs every
request waiting at that moment into one stream message (up to `max_pack`;
`max_pack=1` sends one request per message, as a plain gRPC client would). A
receiver resolves each future by request id.

At most `max_in_flight` requests are sent and not yet answered; more wait in the
client (not failed) and go out as answers come back. By default the window is
taken from the server's limits at connect (sidecar/window.py), so one client
never overruns the server's queue however much it submits at once.

When the stream dies (the server went away or ended it, a read or a write
failed), every unanswered request fails at once with InferError(UNAVAILABLE),
and so does every later submit, at once. `alive` says whether the stream is
open; `wait_dead()` returns why it died. With `reconnect=ReconnectPolicy()` the
client opens a new channel and stream, with backoff, once the server's health
says SERVING (sidecar/reconnect.py); meanwhile submits still fail at once.
`close()` waits for the answers at most `timeout_s`, then cancels what is left.

`counts` tallies what was sent and how each request ended, for reconciliation
with the server's metrics. Every attempt counts, so retries show up as `retried`
plus one outcome per attempt:

    sent        requests written to the stream
    OK, <CODE>  answers from the server, by status code
    lost        sent, but the stream died before the answer came
    CANCELLED   also: sent, and failed by cancel() or by close() past its timeout
    unsent      failed in the client, never sent: submitted while the stream was
                down, waiting for the window when the stream died or the client
                closed, or cancelled by cancel_request() before it went out

Retrying requests refused for lack of room (RESOURCE_EXHAUSTED) is off by
default; pass `retry=RetryPolicy()` to turn it on (see sidecar/retry.py).

    async with SidecarClient("127.0.0.1:7651") as client:
        out = await client.infer({"input": np.ones(16, np.float32)})
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.api.v1 import gpu_sidecar_pb2_grpc as pb_grpc
from sidecar.core.tensors import DTYPES
from sidecar.packing import MIN_BATCH, Row, encode, pack, row_of
from sidecar.reconnect import ReconnectPolicy
from sidecar.retry import RetryPolicy
from sidecar.endpoint import grpc_address
from sidecar.window import DEFAULT_MAX_IN_FLIGHT, window_from_limits
from sidecar.wire import duration, retry_after_s

Arrays = Mapping[str, np.ndarray]

CLOSE_TIMEOUT_S = 30.0  # close()'s default wait for the answers
MODEL_INFO_TIMEOUT_S = 5.0  # connect()'s wait for the server's limits, when no window is given
SHUTDOWN_GRACE_S = 2.0  # once cancelled, how long the tasks and channel get to end


@dataclass(frozen=True, slots=True)
class TimedResult:
    """Outputs plus where the request's time went on the server (docs/metrics.md)."""

    outputs: dict[str, np.ndarray]
    queue_wait_s: float
    compute_s: float
    batch_size: int


class InferError(Exception):
    """A request answered with an error, or failed with its stream."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


_CODES = {c.value[0]: c for c in grpc.StatusCode}


def to_tensor(name: str, value: Any) -> pb.Tensor:
    dtype, shape, data = encode(name, value)
    return pb.Tensor(name=name, dtype=dtype, shape=shape, data=data)


def from_tensor(t: pb.Tensor) -> np.ndarray:
    return np.frombuffer(t.data, dtype=DTYPES[t.dtype]).reshape(tuple(t.shape))


def _stream_failure(code: grpc.StatusCode, details: str | None) -> InferError:
    """What the requests of a failed stream fail with: UNAVAILABLE, retryable on a new
    stream; except a limit the server put on the stream itself (a message over its size
    limit is RESOURCE_EXHAUSTED), which keeps its code: a limit is not a fault."""
    kept = code if code is grpc.StatusCode.RESOURCE_EXHAUSTED else grpc.StatusCode.UNAVAILABLE
    return InferError(kept, f"stream failed ({code.name}): {details}")


async def _health_status(channel: grpc.aio.Channel, timeout_s: float) -> int | None:
    """grpc.health.v1's answer for service "" (SERVING, NOT_SERVING, ...); None if none came."""
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
        )
    except grpc.aio.AioRpcError:
        return None
    return reply.status


@dataclass(eq=False, slots=True)
class _Link:
    """One channel, the Infer call on it, and the tasks that write and read that call."""

    channel: grpc.aio.Channel
    stub: pb_grpc.GpuSidecarStub
    call: Any
    window: int
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class SidecarClient:
    def __init__(
        self,
        target: str,
        *,
        max_pack: int = 64,
        max_message_bytes: int = 64 * 1024 * 1024,
        retry: RetryPolicy | None = None,
        reconnect: ReconnectPolicy | None = None,
        max_in_flight: int | None = None,
        batch_major: bool = True,
    ) -> None:
        """`max_in_flight=None` takes the window from the server's limits at connect
        (DEFAULT_MAX_IN_FLIGHT if it cannot tell); `reconnect=None` leaves a dead
        stream dead. With `batch_major` (and max_pack > 1), alike requests packed
        into one message go in batch-major form where the server reads it
        (sidecar/packing.py)."""
        if max_pack < 1:
            raise ValueError("max_pack must be >= 1")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self._retry = retry
        self._reconnect = reconnect
        self._max_in_flight = max_in_flight
        self._window = max_in_flight or DEFAULT_MAX_IN_FLIGHT
        self._target = grpc_address(target)
        self._max_pack = max_pack
        self._want_batches = batch_major and max_pack > 1
        self._send_batches = False  # the server on the open stream reads batch-major items
        self._rows: dict[int, Row] = {}  # unsent requests' inputs, for batch-major packing
        self._options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        self._link: _Link | None = None  # the open stream; None while down
        self._down = InferError(grpc.StatusCode.UNAVAILABLE, "not connected: call connect() first")
        self._up_event = asyncio.Event()
        self._down_event = asyncio.Event()
        self._down_event.set()
        self._ids = itertools.count(1)
        self._futures: dict[int, asyncio.Future[Any]] = {}  # submitted, not yet settled: unsent and in flight
        self._unsent: dict[int, pb.InferRequest] = {}  # waiting for room in the window, in order
        self._cancels: list[int] = []
        self._retrying: set[asyncio.Future[Any]] = set()  # callers' futures while retries may follow
        self._reconnecting: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[Any]] = set()  # ending tasks and closing channels
        self._stay_down = False  # close() began: no more reconnecting
        self._closing = False  # no new requests
        self._closed = False
        self.counts: Counter[str] = Counter()
        self.reconnects = 0  # streams reopened after one died
        self.reconnect_attempts = 0  # health checks made to that end
        self.peak_in_flight = 0  # the most requests ever in flight at once

    async def __aenter__(self) -> SidecarClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- the stream's state --------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """True while a stream is open and takes requests."""
        return self._link is not None and not self._closing

    @property
    def dead_reason(self) -> InferError | None:
        """Why the stream is down (what its unanswered requests failed with); None while alive."""
        return None if self.alive else self._down

    async def wait_dead(self) -> InferError:
        """Returns once the stream is down (at once if it is), with the reason."""
        await self._down_event.wait()
        return self._down

    async def wait_alive(self, timeout_s: float) -> None:
        """Waits until a stream is open (after a reconnect, say); TimeoutError after `timeout_s`."""
        if self._closing:
            raise RuntimeError("client is closed")
        try:
            await asyncio.wait_for(self._up_event.wait(), timeout_s)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no stream to {self._target} after {timeout_s:g} s: {self._down.message}") from None

    @property
    def max_in_flight(self) -> int:
        """The window in force (or last in force): the most requests sent and not yet answered."""
        return self._window

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        return len(self._futures) - len(self._unsent)

    @property
    def stub(self) -> pb_grpc.GpuSidecarStub:
        """The open stream's stub, for the RPCs this client does not wrap."""
        if self._link is None:
            raise RuntimeError(f"no open stream: {self._down.message}")
        return self._link.stub

    # ---- opening and closing -------------------------------------------------------------

    async def connect(self) -> None:
        """Opens a channel and the stream. Without `max_in_flight`, asks the server for its
        limits first (GetModelInfo, waiting at most MODEL_INFO_TIMEOUT_S). It does not wait
        for the server to be ready: see wait_ready(). Called again after the stream died
        (with no reconnect policy), it opens a new one."""
        if self._closing:
            raise RuntimeError("client is closed")
        if self._link is not None or self._reconnecting is not None:
            raise RuntimeError("already connected" if self._link is not None else "already reconnecting")
        channel = self._new_channel()
        if not await self._open(channel):
            await channel.close()

    async def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Ends the stream, first waiting at most `timeout_s` (default 30 s) for the
        answers to everything submitted so far (retries included).

        What is still unanswered then fails CANCELLED (counted: CANCELLED if it was sent,
        unsent if not), the stream is cancelled and the channel closed; so this returns
        within `timeout_s` plus about SHUTDOWN_GRACE_S even if the server is dead or hung.
        Reconnecting stops at once."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self._stop_reconnecting()
        pending = [*self._futures.values(), *self._retrying]
        if pending:
            await asyncio.wait(pending, timeout=max(deadline - loop.time(), 0.0))
        self._closing = True
        link = self._link
        if link is not None:
            link.wakeup.set()  # the sender half-closes once all is written; the server then ends the call
            await asyncio.wait([link.tasks[1]], timeout=max(deadline - loop.time(), 0.0))
        message = f"the client closed with this request unanswered after {timeout_s:g} s"
        await self._shut(grpc.StatusCode.CANCELLED, message)

    async def cancel(self) -> None:
        """Cancels the stream: every unanswered request fails CANCELLED (and is counted so)."""
        await self._shut(grpc.StatusCode.CANCELLED, "the client cancelled its stream")

    # ---- submitting ----------------------------------------------------------------------

    def submit(self, inputs: Arrays, *, timeout_s: float | None = None) -> asyncio.Future[dict[str, np.ndarray]]:
        """Queues one request; the future resolves to its outputs or raises InferError.
        While the stream is down the future has already failed UNAVAILABLE."""
        request, row = self._request(inputs, timeout_s)
        if self._retry is None or not self.alive:
            return self._submit(request, row)
        loop = asyncio.get_running_loop()
        outer: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        deadline = math.inf if timeout_s is None else loop.time() + timeout_s
        self._retrying.add(outer)
        outer.add_done_callback(self._retrying.discard)
        self._attempt(request, deadline, outer, 1)
        return outer

    def submit_timed(self, inputs: Arrays, *, timeout_s: float | None = None) -> asyncio.Future[TimedResult]:
        """As `submit`, but the server adds per-stage timing: resolves to a TimedResult."""
        return self._submit(*self._request(inputs, timeout_s, return_timing=True))  # type: ignore[return-value]

    def submit_raw(self, request: pb.InferRequest) -> asyncio.Future[Any]:
        """Queues a prepared request as is (its id must not be in flight); for tests and tools."""
        return self._submit(request, None)

    def _submit(self, request: pb.InferRequest, row: Row | None) -> asyncio.Future[Any]:
        """`row`: the request's inputs for batch-major packing, kept only once it is queued."""
        if self._closing:
            raise RuntimeError("client is closed")
        if request.request_id in self._futures:
            raise ValueError(f"request id {request.request_id} is already in flight on this stream")
        future = asyncio.get_running_loop().create_future()
        link = self._link
        if link is None:
            self.counts["unsent"] += 1
            future.set_exception(self._refusal())
            return future
        self._futures[request.request_id] = future
        self._unsent[request.request_id] = request
        if row is not None:
            self._rows[request.request_id] = row
        link.wakeup.set()
        return future

    def cancel_request(self, request_id: int) -> None:
        """Asks the server to cancel one request of this stream; its future then
        resolves CANCELLED (or with its result, if that was already on its way).
        One still waiting for the window is never sent: it fails CANCELLED here."""
        self._rows.pop(request_id, None)
        if self._unsent.pop(request_id, None) is not None:
            future = self._futures.pop(request_id)
            self.counts["unsent"] += 1
            if not future.done():
                future.set_exception(InferError(grpc.StatusCode.CANCELLED, "cancelled before it was sent"))
            return
        if self._link is not None:
            self._cancels.append(request_id)
            self._link.wakeup.set()

    async def infer(self, inputs: Arrays, *, timeout_s: float | None = None) -> dict[str, np.ndarray]:
        return await self.submit(inputs, timeout_s=timeout_s)

    # ---- other RPCs ----------------------------------------------------------------------

    async def wait_ready(self, timeout_s: float = 30.0, poll_s: float = 0.05) -> None:
        """Waits until the server reports SERVING on grpc.health.v1; TimeoutError otherwise."""
        link = self._link
        own = link is None
        channel = self._new_channel() if link is None else link.channel
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            while await _health_status(channel, poll_s * 20) != health_pb2.HealthCheckResponse.SERVING:
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"{self._target} not ready after {timeout_s:g} s")
                await asyncio.sleep(poll_s)
        finally:
            if own:
                await channel.close()

    async def ping(self) -> pb.PingResponse:
        return await self.stub.Ping(pb.PingRequest())

    async def model_info(self) -> pb.ModelInfo:
        return await self.stub.GetModelInfo(pb.GetModelInfoRequest())

    # ---- inside --------------------------------------------------------------------------

    def _new_channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self._target, options=self._options)

    async def _open(self, channel: grpc.aio.Channel) -> bool:
        """Opens the stream on `channel`; False if the client began closing meanwhile."""
        stub = pb_grpc.GpuSidecarStub(channel)
        limits = await self._server_limits(stub) if self._max_in_flight is None or self._want_batches else None
        window = self._max_in_flight or (window_from_limits(limits) if limits is not None else DEFAULT_MAX_IN_FLIGHT)
        if self._stay_down or self._link is not None:
            return False
        link = _Link(channel, stub, stub.Infer(), window)
        self._window = window
        self._send_batches = self._want_batches and limits is not None and limits.batch_major_requests
        self._link = link
        self._down_event.clear()
        self._up_event.set()
        link.tasks = [asyncio.ensure_future(self._send(link)), asyncio.ensure_future(self._receive(link))]
        return True

    @staticmethod
    async def _server_limits(stub: pb_grpc.GpuSidecarStub) -> pb.Limits | None:
        try:
            info = await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=MODEL_INFO_TIMEOUT_S)
        except grpc.aio.AioRpcError:
            return None  # an old server, one still loading, or none there yet
        return info.limits

    def _refusal(self) -> InferError:
        state = "reconnecting" if self._reconnecting is not None else "not reconnecting"
        return InferError(grpc.StatusCode.UNAVAILABLE, f"the stream is down ({state}): {self._down.message}")

    def _died(self, link: _Link, error: InferError) -> None:
        """The stream on `link` is over, unasked: everything on it fails; maybe reconnect."""
        if link is not self._link:
            return  # already handled, or the client shut it
        self._link = None
        self._down = error
        self._up_event.clear()
        self._down_event.set()
        self._drop(link)
        self._fail_pending(error, sent_as="lost")
        if self._reconnect is not None and not self._stay_down:
            self._reconnecting = asyncio.ensure_future(self._reconnect_loop(self._reconnect))

    async def _shut(self, code: grpc.StatusCode, message: str) -> None:
        """The client ends everything: the stream, what is unanswered, reconnecting."""
        self._closing = True
        self._stop_reconnecting()
        link, self._link = self._link, None
        if not self._closed:
            self._down = InferError(grpc.StatusCode.CANCELLED, "the client is closed")
        self._up_event.clear()
        self._down_event.set()
        if link is not None:
            self._drop(link)
        self._fail_pending(InferError(code, message), sent_as=code.name)
        for outer in list(self._retrying):
            if not outer.done():
                outer.set_exception(InferError(code, message))
        if self._background:
            await asyncio.wait(list(self._background), timeout=SHUTDOWN_GRACE_S)
        self._closed = True

    def _drop(self, link: _Link) -> None:
        """Cancels the call and its tasks (all but the caller's own) and closes the channel."""
        link.call.cancel()
        current = asyncio.current_task()
        for task in link.tasks:
            if task is not current:
                task.cancel()
                self._keep(task)
        self._keep(asyncio.ensure_future(link.channel.close()))

    def _keep(self, future: asyncio.Future[Any]) -> None:
        self._background.add(future)
        future.add_done_callback(self._background.discard)

    def _stop_reconnecting(self) -> None:
        self._stay_down = True
        task, self._reconnecting = self._reconnecting, None
        if task is not None:
            task.cancel()
            self._keep(task)

    def _fail_pending(self, error: InferError, sent_as: str) -> None:
        """Fails every unsettled request with (a copy of) `error`."""
        futures, self._futures = self._futures, {}
        unsent, self._unsent = self._unsent, {}
        self._rows.clear()
        self._cancels.clear()
        for request_id, future in futures.items():
            self.counts["unsent" if request_id in unsent else sent_as] += 1
            if not future.done():
                future.set_exception(InferError(error.code, error.message))

    async def _reconnect_loop(self, policy: ReconnectPolicy) -> None:
        attempt = 0
        try:
            while True:
                attempt += 1
                await asyncio.sleep(policy.delay_s(attempt))
                channel = self._new_channel()
                self.reconnect_attempts += 1
                opened = False
                try:
                    if await _health_status(channel, policy.health_timeout_s) == health_pb2.HealthCheckResponse.SERVING:
                        opened = await self._open(channel)
                finally:
                    if not opened:
                        self._keep(asyncio.ensure_future(channel.close()))
                if opened:
                    self.reconnects += 1
                    return
                if policy.gives_up_after(attempt):
                    self._down = InferError(
                        self._down.code, f"gave up reconnecting after {attempt} attempts; {self._down.message}"
                    )
                    return
        finally:
            if self._reconnecting is asyncio.current_task():
                self._reconnecting = None

    def _attempt(self, request: pb.InferRequest, deadline: float, outer: asyncio.Future[Any], attempt: int) -> None:
        if outer.done():
            return  # the caller gave up
        if self._closing:
            outer.set_exception(InferError(grpc.StatusCode.CANCELLED, "client closed before the retry"))
            return
        loop = asyncio.get_running_loop()
        if deadline != math.inf:
            request.timeout.CopyFrom(duration(max(deadline - loop.time(), 1e-6)))
        inner = self.submit_raw(request)

        def settle(f: asyncio.Future[Any]) -> None:
            if outer.done():
                return
            error = f.exception()
            if isinstance(error, InferError) and error.code is grpc.StatusCode.RESOURCE_EXHAUSTED:
                assert self._retry is not None
                delay = self._retry.next_delay_s(attempt, error.retry_after_s, deadline - loop.time())
                if delay is not None:
                    self.counts["retried"] += 1
                    again = pb.InferRequest()
                    again.CopyFrom(request)
                    again.request_id = next(self._ids)  # the refused id was answered; a new attempt, a new id
                    loop.call_later(delay, self._attempt, again, deadline, outer, attempt + 1)
                    return
            if error is not None:
                outer.set_exception(error)
            else:
                outer.set_result(f.result())

        inner.add_done_callback(settle)

    def _request(
        self, inputs: Arrays, timeout_s: float | None, return_timing: bool = False
    ) -> tuple[pb.InferRequest, Row | None]:
        """The wire request, and its row for batch-major packing where the open
        stream's server reads batches (None otherwise)."""
        row = None
        if self._send_batches:
            row, tensors = row_of(inputs, timeout_s, return_timing)
        else:
            tensors = [to_tensor(n, v) for n, v in inputs.items()]
        request = pb.InferRequest(request_id=next(self._ids), inputs=tensors, return_timing=return_timing)
        if timeout_s is not None:
            request.timeout.CopyFrom(duration(timeout_s))
        return request, row

    async def _send(self, link: _Link) -> None:
        """Writes what waits, as the window allows; half-closes once closing and all is written."""
        try:
            while True:
                room = link.window - self.in_flight
                if (room <= 0 or not self._unsent) and not self._cancels:
                    if self._closing and not self._unsent:
                        await link.call.done_writing()
                        return
                    link.wakeup.clear()
                    await link.wakeup.wait()
                    continue
                ids = list(itertools.islice(self._unsent, max(0, min(room, self._max_pack))))
                batch = [self._unsent.pop(i) for i in ids]
                rows = self._rows
                batches: list[pb.InferBatch] = []
                if rows:
                    if self._send_batches and len(ids) >= MIN_BATCH:
                        batch, batches = pack(ids, batch, rows, duration)
                    for i in ids:
                        rows.pop(i, None)
                cancels, self._cancels = self._cancels, []
                if ids:
                    self.counts["sent"] += len(ids)
                    self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                await link.call.write(pb.InferStreamRequest(requests=batch, cancel=cancels, batches=batches))
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as e:
            self._died(link, _stream_failure(e.code(), e.details()))
        except Exception as e:  # the call is over (InvalidStateError), or a request would not serialise
            if link is self._link:
                self._died(link, await self._call_failure(link, f"writing failed: {e!r}"))

    async def _call_failure(self, link: _Link, fallback: str) -> InferError:
        """Why the call on `link` ended, from its status if it has one soon."""
        try:
            code = await asyncio.wait_for(link.call.code(), SHUTDOWN_GRACE_S)
            details = await asyncio.wait_for(link.call.details(), SHUTDOWN_GRACE_S)
        except (asyncio.TimeoutError, grpc.aio.AioRpcError):
            return InferError(grpc.StatusCode.UNAVAILABLE, f"stream failed: {fallback}")
        return _stream_failure(code, details or fallback)

    async def _receive(self, link: _Link) -> None:
        try:
            while True:
                message = await link.call.read()
                if message is grpc.aio.EOF:
                    if not (self._closing and not self._futures):
                        self._died(link, InferError(grpc.StatusCode.UNAVAILABLE, "the server ended the stream"))
                    return
                for response in message.responses:
                    self._resolve(response)
                if message.unknown_cancels:
                    self.counts["unknown_cancels"] += len(message.unknown_cancels)
                if self._unsent:
                    link.wakeup.set()  # answers made room in the window
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as e:
            self._died(link, _stream_failure(e.code(), e.details()))
        except Exception as e:  # a bug here must not leave the callers waiting
            self._died(link, InferError(grpc.StatusCode.UNAVAILABLE, f"stream failed: reading failed: {e!r}"))

    def _resolve(self, response: pb.InferResponse) -> None:
        if response.request_id in self._unsent:  # an answer to a request not sent (yet)
            self.counts["unexpected"] += 1
            return
        future = self._futures.pop(response.request_id, None)
        if future is None:
            self.counts["unexpected"] += 1
            return
        if response.HasField("error"):
            code = _CODES.get(response.error.code, grpc.StatusCode.UNKNOWN)
            self.counts[code.name] += 1
            error = InferError(code, response.error.message, retry_after_s(response.error))
            if not future.done():
                future.set_exception(error)
            return
        self.counts["OK"] += 1
        if future.done():
            return
        outputs = {t.name: from_tensor(t) for t in response.outputs}
        if response.HasField("timing"):
            t = response.timing
            future.set_result(
                TimedResult(outputs, t.queue_wait.ToNanoseconds() / 1e9, t.compute.ToNanoseconds() / 1e9, t.batch_size)
            )
        else:
            future.set_result(outputs)
