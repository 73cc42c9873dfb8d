"""An asyncio client over one Infer stream.

It pipelines: `submit()` returns a future at once, and a sender task packs every
request waiting at that moment into one stream message (up to `max_pack`;
`max_pack=1` sends one request per message, as a plain gRPC client would). A
receiver resolves each future by request id. `counts` tallies what was sent and
how each request ended, for reconciliation with the server's metrics: every
attempt counts, so retries show up as `retried` plus one outcome per attempt.

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
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.api.v1 import gpu_sidecar_pb2_grpc as pb_grpc
from sidecar.core.tensors import DTYPES
from sidecar.retry import RetryPolicy
from sidecar.rpc.convert import duration, retry_after_s
from sidecar.server.endpoint import grpc_address

Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class TimedResult:
    """Outputs plus where the request's time went on the server (docs/metrics.md)."""

    outputs: dict[str, np.ndarray]
    queue_wait_s: float
    compute_s: float
    batch_size: int


class InferError(Exception):
    """A request answered with an error, or lost with its stream."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


_CODES = {c.value[0]: c for c in grpc.StatusCode}


def to_tensor(name: str, value: Any) -> pb.Tensor:
    arr = np.asarray(value)
    if arr.dtype.name not in DTYPES:
        raise TypeError(f"input {name!r}: dtype {arr.dtype} is not supported; use one of {sorted(DTYPES)}")
    data = np.ascontiguousarray(arr, dtype=DTYPES[arr.dtype.name]).tobytes()
    return pb.Tensor(name=name, dtype=arr.dtype.name, shape=arr.shape, data=data)


def from_tensor(t: pb.Tensor) -> np.ndarray:
    return np.frombuffer(t.data, dtype=DTYPES[t.dtype]).reshape(tuple(t.shape))


class SidecarClient:
    def __init__(
        self,
        target: str,
        *,
        max_pack: int = 64,
        max_message_bytes: int = 64 * 1024 * 1024,
        retry: RetryPolicy | None = None,
    ) -> None:
        if max_pack < 1:
            raise ValueError("max_pack must be >= 1")
        self._retry = retry
        self._target = grpc_address(target)
        self._max_pack = max_pack
        self._options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.GpuSidecarStub | None = None
        self._call: Any = None
        self._ids = itertools.count(1)
        self._futures: dict[int, asyncio.Future[dict[str, np.ndarray]]] = {}
        self._outgoing: list[pb.InferRequest] = []
        self._cancels: list[int] = []
        self._retrying: set[asyncio.Future[Any]] = set()  # callers' futures while retries may follow
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.counts: Counter[str] = Counter()

    async def __aenter__(self) -> SidecarClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def stub(self) -> pb_grpc.GpuSidecarStub:
        assert self._stub is not None, "connect() first"
        return self._stub

    async def connect(self) -> None:
        self._channel = grpc.aio.insecure_channel(self._target, options=self._options)
        self._stub = pb_grpc.GpuSidecarStub(self._channel)
        self._call = self._stub.Infer()
        self._tasks = [asyncio.ensure_future(self._send()), asyncio.ensure_future(self._receive())]

    async def close(self) -> None:
        """Waits for every submitted request's answer (retries included), then ends the stream."""
        if self._futures or self._retrying:
            await asyncio.gather(*self._futures.values(), *self._retrying, return_exceptions=True)
        self._closing = True
        self._wakeup.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()

    async def cancel(self) -> None:
        """Cancels the stream: every unanswered request fails CANCELLED (and is counted so)."""
        self._closing = True
        if self._call is not None:
            self._call.cancel()
        self._fail_all(grpc.StatusCode.CANCELLED, "the client cancelled its stream", count_as="CANCELLED")
        self._wakeup.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()

    def submit(self, inputs: Arrays, *, timeout_s: float | None = None) -> asyncio.Future[dict[str, np.ndarray]]:
        """Queues one request; the future resolves to its outputs or raises InferError."""
        request = self._request(inputs, timeout_s)
        if self._retry is None:
            return self.submit_raw(request)
        loop = asyncio.get_running_loop()
        outer: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        deadline = math.inf if timeout_s is None else loop.time() + timeout_s
        self._retrying.add(outer)
        outer.add_done_callback(self._retrying.discard)
        self._attempt(request, deadline, outer, 1)
        return outer

    def cancel_request(self, request_id: int) -> None:
        """Asks the server to cancel one request of this stream; its future then
        resolves CANCELLED (or with its result, if that was already on its way)."""
        self._cancels.append(request_id)
        self._wakeup.set()

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

    def submit_timed(self, inputs: Arrays, *, timeout_s: float | None = None) -> asyncio.Future[TimedResult]:
        """As `submit`, but the server adds per-stage timing: resolves to a TimedResult."""
        request = self._request(inputs, timeout_s)
        request.return_timing = True
        return self.submit_raw(request)  # type: ignore[return-value]

    def _request(self, inputs: Arrays, timeout_s: float | None) -> pb.InferRequest:
        request = pb.InferRequest(request_id=next(self._ids), inputs=[to_tensor(n, v) for n, v in inputs.items()])
        if timeout_s is not None:
            request.timeout.CopyFrom(duration(timeout_s))
        return request

    def submit_raw(self, request: pb.InferRequest) -> asyncio.Future[Any]:
        """Queues a prepared request as is (its id must not be in flight); for tests and tools."""
        if self._closing:
            raise RuntimeError("client is closed")
        future = asyncio.get_running_loop().create_future()
        self._futures[request.request_id] = future
        self._outgoing.append(request)
        self.counts["sent"] += 1
        self._wakeup.set()
        return future

    async def infer(self, inputs: Arrays, *, timeout_s: float | None = None) -> dict[str, np.ndarray]:
        return await self.submit(inputs, timeout_s=timeout_s)

    async def wait_ready(self, timeout_s: float = 30.0, poll_s: float = 0.05) -> None:
        """Waits until the server reports SERVING on grpc.health.v1; TimeoutError otherwise."""
        stub = health_pb2_grpc.HealthStub(self._channel)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=poll_s * 20)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass  # not listening yet
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{self._target} not ready after {timeout_s:g} s")
            await asyncio.sleep(poll_s)

    async def ping(self) -> pb.PingResponse:
        return await self.stub.Ping(pb.PingRequest())

    async def model_info(self) -> pb.ModelInfo:
        return await self.stub.GetModelInfo(pb.GetModelInfoRequest())

    async def _send(self) -> None:
        try:
            while True:
                if not self._outgoing and not self._cancels:
                    if self._closing:
                        await self._call.done_writing()
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                batch = self._outgoing[: self._max_pack]
                del self._outgoing[: self._max_pack]
                cancels, self._cancels = self._cancels, []
                await self._call.write(pb.InferStreamRequest(requests=batch, cancel=cancels))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
            pass  # the receiver sees the stream end and fails what is left

    async def _receive(self) -> None:
        try:
            while True:
                message = await self._call.read()
                if message is grpc.aio.EOF:
                    break
                for response in message.responses:
                    self._resolve(response)
                if message.unknown_cancels:
                    self.counts["unknown_cancels"] += len(message.unknown_cancels)
            self._fail_all(grpc.StatusCode.UNAVAILABLE, "stream ended before this request was answered")
        except grpc.aio.AioRpcError as e:
            self._fail_all(e.code(), f"stream failed: {e.details()}")
        except asyncio.CancelledError:
            pass  # cancel() has failed what was pending

    def _resolve(self, response: pb.InferResponse) -> None:
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

    def _fail_all(self, code: grpc.StatusCode, message: str, count_as: str = "lost") -> None:
        """Fails every unanswered request; `lost` counts those the server never answered."""
        futures, self._futures = self._futures, {}
        self._outgoing.clear()
        for future in futures.values():
            self.counts[count_as] += 1
            if not future.done():
                future.set_exception(InferError(code, message))
