"""Every kind of bad input, one at a time: it is refused naming what is wrong, and nothing else suffers.

Per-request problems get INVALID_ARGUMENT while good neighbours in the same message
succeed. Problems below the request (an oversized message, garbage on the socket)
end at most that one call or connection; the server keeps serving. Cancels by id
answer queued and running requests CANCELLED and report unknown ids.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from google.protobuf import duration_pb2

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.backends.base import Backend, BackendInfo
from sidecar.backends.mock import MockBackend
from sidecar.client import InferError, SidecarClient
from sidecar.core.tensors import ModelSpec, TensorSpec
from tests.rpc.helpers import Gate, eventually, queue_depth_reaches, run, serving, settled_counts

WAIT_S = 10.0
GOOD = np.arange(16, dtype=np.float32)
MASK = np.ones(16, dtype=np.uint8)
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
CANCELLED = grpc.StatusCode.CANCELLED.value[0]


def tensor(name: str = "input", dtype: str = "float32", shape=(16,), data: bytes | None = None) -> pb.Tensor:
    return pb.Tensor(name=name, dtype=dtype, shape=list(shape), data=GOOD.tobytes() if data is None else data)


class TwoInputBackend(Backend):
    """A model with two inputs, `input` (float32 [16]) and `mask` (uint8 [16]): output = input * 2 * mask."""

    name = "two-input"

    def load(self) -> BackendInfo:
        spec = ModelSpec(
            inputs=(TensorSpec("input", "float32", (16,)), TensorSpec("mask", "uint8", (16,))),
            outputs=(TensorSpec("output", "float32", (16,)),),
        )
        return BackendInfo(spec)

    def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return {"output": inputs["input"] * np.float32(2) * inputs["mask"]}


@dataclass(frozen=True)
class Bad:
    inputs: list[pb.Tensor]
    words: str  # what the error message must say
    timeout: duration_pb2.Duration | None = None
    same_id_as_neighbour: bool = False
    two_inputs: bool = False  # run against TwoInputBackend (the good neighbour then sends both inputs)


MASK_T = pb.Tensor(name="mask", dtype="uint8", shape=[16], data=MASK.tobytes())

BAD = {
    "unknown dtype": Bad([tensor(dtype="float128", data=b"\0" * 256)], "input 'input': unknown dtype 'float128'"),
    "dtype not the model's": Bad(
        [tensor(dtype="float64", data=b"\0" * 128)], "input 'input': dtype float64 does not match the model's float32"
    ),
    "bytes do not match dtype x shape": Bad(
        [tensor(data=b"\0" * 63)], "input 'input': 63 bytes, but float32 x [16] needs 64"
    ),
    "bytes do not match dtype x shape (too many)": Bad(
        [tensor(data=b"\0" * 65)], "input 'input': 65 bytes, but float32 x [16] needs 64"
    ),
    "shape not the model's": Bad(
        [tensor(shape=(4, 4))], "input 'input': shape [4, 4] does not match the model's per-item shape [16]"
    ),
    "shape with a batch dimension": Bad(
        [tensor(shape=(1, 16))], "input 'input': shape [1, 16] does not match the model's per-item shape [16]"
    ),
    "scalar shape": Bad(
        [tensor(shape=(), data=b"\0" * 4)], "input 'input': shape [] does not match the model's per-item shape [16]"
    ),
    "missing input": Bad([tensor()], "missing input(s) ['mask']; the model expects ['input', 'mask']", two_inputs=True),
    "extra input name": Bad(
        [tensor(), tensor(name="extra")], "unknown input name(s) ['extra']; the model expects ['input']"
    ),
    "duplicated input name": Bad([tensor(), tensor()], "input 'input' appears more than once"),
    "empty request": Bad([], "request has no inputs; the model expects ['input']"),
    "negative dimension": Bad([tensor(shape=(-16,))], "input 'input': negative dimension in shape [-16]"),
    "negative dimensions whose product fits": Bad(
        [tensor(shape=(-4, -4))], "input 'input': negative dimension in shape [-4, -4]"
    ),
    "huge dimensions": Bad(
        [tensor(shape=(2**40, 2**40))],
        "input 'input': shape [1099511627776, 1099511627776] has more than 2147483648 elements",
    ),
    "id already in flight": Bad(
        [tensor()], "request id 1 is already in flight on this stream", same_id_as_neighbour=True
    ),
    "zero timeout": Bad([tensor()], "timeout must be positive, got 0 ms", timeout=duration_pb2.Duration(seconds=0)),
    "negative timeout": Bad(
        [tensor()], "timeout must be positive, got -1000 ms", timeout=duration_pb2.Duration(seconds=-1)
    ),
    "negative timeout under a second": Bad(
        [tensor()], "timeout must be positive, got -500 ms", timeout=duration_pb2.Duration(nanos=-500_000_000)
    ),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_input_is_invalid_argument_naming_the_problem_and_its_neighbours_succeed(kind):
    bad = BAD[kind]
    good_inputs = [tensor(), MASK_T] if bad.two_inputs else [tensor()]
    bad_id = 1 if bad.same_id_as_neighbour else 2
    request = pb.InferRequest(request_id=bad_id, inputs=bad.inputs)
    if bad.timeout is not None:
        request.timeout.CopyFrom(bad.timeout)
    neighbours = [pb.InferRequest(request_id=i, inputs=good_inputs) for i in (1, 3)]
    message = pb.InferStreamRequest(requests=[neighbours[0], request, neighbours[1]])

    async def go():
        backends = [TwoInputBackend("two-input:")] if bad.two_inputs else None
        async with serving(backends=backends) as server:
            async with SidecarClient(server.address) as client:
                call = client.stub.Infer()
                await call.write(message)
                responses: list[pb.InferResponse] = []
                while len(responses) < 3:
                    responses.extend((await next_message(call)).responses)

                errors = [r for r in responses if r.HasField("error")]
                oks = [r for r in responses if not r.HasField("error")]
                assert len(errors) == 1, responses
                error = errors[0]
                assert error.request_id == bad_id and error.error.code == INVALID, error
                assert bad.words in error.error.message, error.error.message
                if not bad.same_id_as_neighbour:
                    assert f"request {bad_id}: " in error.error.message, error.error.message
                assert not error.outputs
                assert sorted(r.request_id for r in oks) == [1, 3]
                for r in oks:
                    np.testing.assert_array_equal(np.frombuffer(r.outputs[0].data, np.float32), GOOD * 2)

                # the stream carries on, and the refused request's id is free again
                await call.write(pb.InferStreamRequest(requests=[pb.InferRequest(request_id=bad_id, inputs=good_inputs)]))
                again = (await next_message(call)).responses
                assert [(r.request_id, r.HasField("error")) for r in again] == [(bad_id, False)]
                await call.done_writing()
                assert await read_to_end(call) == []
                assert await call.code() is grpc.StatusCode.OK
            counts = await settled_counts(server)
            assert counts["outcomes"] == {"received": 4, "succeeded": 3, "invalid": 1}

    run(go())


# ---- a gated backend: requests held in it, or queued behind it ------------------------------


async def next_message(call) -> pb.InferStreamResponse:
    message = await asyncio.wait_for(call.read(), WAIT_S)
    assert message is not grpc.aio.EOF
    return message


async def read_to_end(call) -> list[pb.InferResponse]:
    """Every response until the server ends the call (read(), not iteration: the two cannot be mixed)."""
    responses = []
    while (message := await asyncio.wait_for(call.read(), WAIT_S)) is not grpc.aio.EOF:
        assert not message.unknown_cancels, message
        responses.extend(message.responses)
    return responses


def held_serving(backend: MockBackend):
    return serving(
        backends=[backend], max_batch_size=4, max_inflight_batches=1, max_queue_wait_s=WAIT_S, batch_timeout_s=0.001
    )


def good_request(request_id: int) -> pb.InferRequest:
    return pb.InferRequest(request_id=request_id, inputs=[tensor()])


def test_id_in_flight_from_an_earlier_message_is_refused_at_once_and_the_original_answered():
    async def go():
        gate = Gate()
        backend = MockBackend("mock:?base_ms=1&per_item_ms=0", sleep=gate)
        async with held_serving(backend) as server:
            async with SidecarClient(server.address) as client:
                call = client.stub.Infer()
                try:
                    gate.open.clear()
                    await call.write(pb.InferStreamRequest(requests=[good_request(7)]))
                    await eventually(lambda: backend.batches == 1, "request 7 to reach the backend")
                    await call.write(pb.InferStreamRequest(requests=[good_request(7), good_request(8)]))
                    # answered while 7 is still held: the duplicate, and only it
                    first = await next_message(call)
                    assert [(r.request_id, r.error.code) for r in first.responses] == [(7, INVALID)]
                    assert "request id 7 is already in flight on this stream" in first.responses[0].error.message
                    gate.open.set()
                    await call.done_writing()
                    rest = await read_to_end(call)
                finally:
                    gate.open.set()
                assert sorted((r.request_id, r.HasField("error")) for r in rest) == [(7, False), (8, False)]
            counts = await settled_counts(server)
            assert counts["outcomes"] == {"received": 3, "succeeded": 2, "invalid": 1}

    run(go())


# ---- cancels by id ----------------------------------------------------------------------------


def test_cancel_of_an_unknown_id_is_reported_and_nothing_else_happens():
    async def go():
        async with serving() as server:
            async with SidecarClient(server.address) as client:
                call = client.stub.Infer()
                await call.write(pb.InferStreamRequest(cancel=[12345]))
                message = await next_message(call)
                assert list(message.unknown_cancels) == [12345] and not message.responses

                await call.write(pb.InferStreamRequest(requests=[good_request(12345)]))
                message = await next_message(call)
                assert not message.unknown_cancels
                assert [r.request_id for r in message.responses] == [12345]
                assert not message.responses[0].HasField("error")

                # an id that was answered already is unknown too
                await call.write(pb.InferStreamRequest(cancel=[12345]))
                message = await next_message(call)
                assert list(message.unknown_cancels) == [12345] and not message.responses
                await call.done_writing()
                assert await read_to_end(call) == []
                assert await call.code() is grpc.StatusCode.OK
            counts = await settled_counts(server)
            assert counts["outcomes"] == {"received": 1, "succeeded": 1}

    run(go())


def test_cancel_of_a_queued_request_answers_it_cancelled_and_it_never_runs():
    async def go():
        gate = Gate()
        backend = MockBackend("mock:?base_ms=1&per_item_ms=0", sleep=gate)
        async with held_serving(backend) as server:
            async with SidecarClient(server.address) as client:
                call = client.stub.Infer()
                try:
                    gate.open.clear()
                    await call.write(pb.InferStreamRequest(requests=[good_request(1)]))
                    await eventually(lambda: backend.batches == 1, "request 1 to reach the backend")
                    await call.write(pb.InferStreamRequest(requests=[good_request(2)]))
                    await queue_depth_reaches(server, 1)

                    await call.write(pb.InferStreamRequest(cancel=[2]))
                    message = await next_message(call)  # while 1 is still held
                    assert [(r.request_id, r.error.code) for r in message.responses] == [(2, CANCELLED)]
                    assert "cancelled by the client" in message.responses[0].error.message
                    assert not message.unknown_cancels
                    await queue_depth_reaches(server, 0)

                    # once answered, its id may be used again
                    await call.write(pb.InferStreamRequest(requests=[good_request(2)]))
                    await queue_depth_reaches(server, 1)
                    gate.open.set()
                    await call.done_writing()
                    rest = await read_to_end(call)
                finally:
                    gate.open.set()
                assert sorted((r.request_id, r.HasField("error")) for r in rest) == [(1, False), (2, False)]
                assert backend.batches == 2  # the cancelled request never ran: 1 alone, then the new 2
            counts = await settled_counts(server)
            assert counts["outcomes"] == {"received": 3, "succeeded": 2, "cancelled": 1}

    run(go())


def test_cancel_in_the_same_message_as_its_request_removes_it_before_it_runs():
    async def go():
        gate = Gate()
        backend = MockBackend("mock:?base_ms=1&per_item_ms=0", sleep=gate)
        async with held_serving(backend) as server:
            async with SidecarClient(server.address) as client:
                call = client.stub.Infer()
                try:
                    gate.open.clear()
                    await call.write(pb.InferStreamRequest(requests=[good_request(1)]))
                    await eventually(lambda: backend.batches == 1, "request 1 to reach the backend")
                    # 999 is a barrier: once it comes back unknown, the session has taken in request 2 and its cancel
                    await call.write(pb.InferStreamRequest(requests=[good_request(2)], cancel=[2, 999]))
                    message = await next_message(call)
                    assert list(message.unknown_cancels) == [999], message
                    gate.open.set()  # the batcher got the Withdraw before it can learn the executor is free
                    await call.done_writing()
                    responses = [*message.responses, *await read_to_end(call)]
                finally:
                    gate.open.set()
                codes = {r.request_id: r.error.code for r in responses}
                assert codes == {1: 0, 2: CANCELLED}, responses
                assert backend.batches == 1, "the cancelled request 2 was run"
            counts = await settled_counts(server)
            assert counts["outcomes"] == {"received": 2, "succeeded": 1, "cancelled": 1}

    run(go())


def test_cancel_of_a_running_request_lets_it_finish_and_answers_it_cancelled():
    async def go():
        gate = Gate()
        backend = MockBackend("mock:?base_ms=1&per_item_ms=0", sleep=gate)
        async with held_serving(backend) as server:
            async with SidecarClient(server.address) as client:
                call = client.stub.Infer()
                try:
                    gate.open.clear()
                    await call.write(pb.InferStreamRequest(requests=[good_request(1), good_request(2)]))
                    await eventually(lambda: backend.batches == 1, "the batch to reach the backend")
                    # 999 is a barrier: the session takes both cancels in together, so once 999
                    # comes back unknown, the cancel of 1 has been taken in (before the batch ends)
                    await call.write(pb.InferStreamRequest(cancel=[1, 999]))
                    message = await next_message(call)
                    assert list(message.unknown_cancels) == [999] and not message.responses, message
                    gate.open.set()
                    await call.done_writing()
                    responses = await read_to_end(call)
                finally:
                    gate.open.set()
                by_id = {r.request_id: r for r in responses}
                assert len(responses) == 2 and set(by_id) == {1, 2}
                assert by_id[1].error.code == CANCELLED and not by_id[1].outputs
                assert "cancelled by the client" in by_id[1].error.message
                # its batch ran to the end: its neighbour in the batch got its result
                assert not by_id[2].HasField("error")
                np.testing.assert_array_equal(np.frombuffer(by_id[2].outputs[0].data, np.float32), GOOD * 2)
                assert backend.batches == 1
            counts = await settled_counts(server, until=lambda c: c["batches"] >= 1)
            assert counts["outcomes"] == {"received": 2, "succeeded": 1, "cancelled": 1}
            assert counts["batches"] == 1

    run(go())


# ---- below the request: an oversized message, garbage on the socket ---------------------------


def test_message_over_the_size_limit_ends_only_that_call_with_resource_exhausted():
    """What the client sees: the call ends RESOURCE_EXHAUSTED (from gRPC, not an
    InferResponse), so `SidecarClient` fails every unanswered request of that stream
    with InferError(RESOURCE_EXHAUSTED, "stream failed: ...") and counts it `lost`.
    The server never read the message: no request is counted. Other streams carry on."""
    limit = 64 * 1024
    big = np.zeros(256 * 1024, np.float32)  # 1 MiB

    async def go():
        async with serving(max_message_bytes=limit) as server:
            async with SidecarClient(server.address) as bystander:
                np.testing.assert_array_equal((await bystander.infer({"input": GOOD}))["output"], GOOD * 2)

                sender = SidecarClient(server.address)  # its own send limit is 64 MiB: the server refuses
                await sender.connect()
                np.testing.assert_array_equal((await sender.infer({"input": GOOD}))["output"], GOOD * 2)
                with pytest.raises(InferError) as err:
                    await asyncio.wait_for(sender.submit({"input": big}), WAIT_S)
                assert err.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED, err.value
                assert "stream failed" in err.value.message and str(limit) in err.value.message, err.value.message
                assert sender.counts["lost"] == 1 and sender.counts["OK"] == 1
                await sender.close()

                # the other stream, and a new one, are served
                np.testing.assert_array_equal((await bystander.infer({"input": GOOD}))["output"], GOOD * 2)
                async with SidecarClient(server.address) as fresh:
                    np.testing.assert_array_equal((await fresh.infer({"input": GOOD}))["output"], GOOD * 2)
            counts = await settled_counts(server)
            assert counts["outcomes"] == {"received": 4, "succeeded": 4}
            assert counts["inflight"] == 0

    run(go())


GARBAGE = {
    "random bytes": random.Random(0).randbytes(4096),
    "http/1.1 request": b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    "http/2 preface then garbage": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + random.Random(1).randbytes(1024),
    "nothing": b"",
}


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_garbage_on_the_socket_does_not_disturb_the_server(kind):
    async def go():
        async with serving() as server:
            async with SidecarClient(server.address) as before:
                np.testing.assert_array_equal((await before.infer({"input": GOOD}))["output"], GOOD * 2)

                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(GARBAGE[kind])
                await writer.drain()
                writer.write_eof()
                # the server answers what it can (a GOAWAY, an HTTP/1 error, or nothing) and hangs up
                await asyncio.wait_for(reader.read(), WAIT_S)
                writer.close()
                await writer.wait_closed()

                # a stream opened before is still served, and so is a new one
                np.testing.assert_array_equal((await before.infer({"input": GOOD}))["output"], GOOD * 2)
                async with SidecarClient(server.address) as after:
                    np.testing.assert_array_equal((await after.infer({"input": GOOD}))["output"], GOOD * 2)
                    assert (await after.model_info()).inputs[0].name == "input"
            counts = await settled_counts(server)
            assert counts["outcomes"] == {"received": 3, "succeeded": 3}

    run(go())
