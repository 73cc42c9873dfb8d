"""Hostile sizes in one request: refused at once, in a short message, and nobody waits for it.

A shape of 300,000 dims held the GIL for 8 s while it was refused (health, Ping and
every stream stalled); a 17 MB name or dtype came back through repr() as a 68 MB
error, over the send limit, which ended the call with every request on it; a million
input names took 1.6 s and came back as a 10 MB error. Each is now answered
INVALID_ARGUMENT within a bound, in a message of at most 1 KiB, while its neighbours
in the same message, a request on another stream and the health service are answered.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.client import SidecarClient
from sidecar.core.tensors import MAX_DIMS, TensorSpec
from sidecar.core.status import Code, Failure
from sidecar.rpc.convert import MAX_MESSAGE_CHARS, arrivals, error_response
from tests.rpc.helpers import WAIT_S, run, serving, settled_counts

GOOD = np.arange(16, dtype=np.float32)
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
SERVING = health_pb2.HealthCheckResponse.SERVING
MESSAGE_BOUND = 1024  # bytes of the refusal's message, whatever was sent
ANSWER_BOUND_S = 2.0  # from writing the bomb to its refusal (a 17 MB message travels both ways within it)
HEALTH_BOUND_S = 1.0  # each health Check, and the other stream's request, while the bomb is in flight


def tensor(name: str = "input", dtype: str = "float32", shape=(16,), data: bytes | None = None) -> pb.Tensor:
    return pb.Tensor(name=name, dtype=dtype, shape=list(shape), data=GOOD.tobytes() if data is None else data)


HUGE_TEXT = "\0" * 17_000_000  # 68 MB through repr()


def with_names(request: pb.InferRequest, n: int) -> pb.InferRequest:
    """`request` with `n` more inputs, named x0, x1, ...: appended as wire bytes
    (field 2, a Tensor with field 1 set), as a million Tensor objects take seconds to build."""
    names = [b"x%d" % i for i in range(n)]
    request.MergeFromString(b"".join([b"\x12" + bytes([len(name) + 2, 0x0A, len(name)]) + name for name in names]))
    return request


BOMBS = {
    # name, dtype and data fit the model, so only the shape is wrong: the fast path sees it too
    "300k dims": (
        lambda: pb.InferRequest(request_id=2, inputs=[tensor(shape=[1000] * 300_000)]),
        f"(300,000 dims) has more than {MAX_DIMS} dims",
    ),
    "17 MB input name": (
        lambda: pb.InferRequest(request_id=2, inputs=[tensor(name=HUGE_TEXT)]),
        "'… (17,000,000 chars)]; the model expects ['input']",
    ),
    "17 MB dtype": (
        lambda: pb.InferRequest(request_id=2, inputs=[tensor(dtype=HUGE_TEXT)]),
        "unknown dtype '\\x00\\x00",
    ),
    "a million input names": (
        lambda: with_names(pb.InferRequest(request_id=2, inputs=[tensor()]), 1_000_000),
        "(6 names) among the first 7 of 1,000,001 inputs",
    ),
}


@pytest.mark.parametrize("kind", list(BOMBS))
def test_hostile_request_is_refused_promptly_and_short_while_neighbours_and_health_are_served(kind):
    make, words = BOMBS[kind]
    good = [tensor()]
    message = pb.InferStreamRequest(
        requests=[
            pb.InferRequest(request_id=1, inputs=good),
            make(),
            pb.InferRequest(request_id=3, inputs=good),
        ]
    )
    print(f"\n{kind}: request message {message.ByteSize() / 1e6:.1f} MB")

    async def go():
        async with serving() as server:
            async with (
                SidecarClient(server.address) as client,
                SidecarClient(server.address) as other,
                grpc.aio.insecure_channel(server.address) as channel,
            ):
                health = health_pb2_grpc.HealthStub(channel)
                assert (await asyncio.wait_for(health.Check(health_pb2.HealthCheckRequest()), WAIT_S)).status == SERVING
                np.testing.assert_array_equal((await other.infer({"input": GOOD}))["output"], GOOD * 2)
                loop = asyncio.get_running_loop()
                call = client.stub.Infer()

                async def send_bomb() -> tuple[list[pb.InferResponse], float]:
                    started = loop.time()
                    await call.write(message)
                    responses: list[pb.InferResponse] = []
                    while len(responses) < 3:
                        responses.extend((await next_message(call)).responses)
                    return responses, loop.time() - started

                async def check_health_until(done: asyncio.Future) -> list[tuple[float, bool]]:
                    """Health Checks one after another until the bomb is answered: (took, issued before then)."""
                    checks = []
                    while not checks or not done.done():
                        issued_before = not done.done()
                        started = loop.time()
                        reply = await asyncio.wait_for(health.Check(health_pb2.HealthCheckRequest()), WAIT_S)
                        assert reply.status == SERVING
                        checks.append((loop.time() - started, issued_before))
                    return checks

                async def infer_on_other_stream() -> float:
                    started = loop.time()
                    np.testing.assert_array_equal((await other.infer({"input": GOOD}))["output"], GOOD * 2)
                    return loop.time() - started

                bomb = asyncio.ensure_future(send_bomb())
                checks, other_took = await asyncio.wait_for(
                    asyncio.gather(check_health_until(bomb), infer_on_other_stream()), WAIT_S
                )
                responses, answered_in = await asyncio.wait_for(bomb, WAIT_S)
                slowest = max(took for took, _ in checks)
                print(
                    f"{kind}: refused in {answered_in * 1e3:.1f} ms; {len(checks)} health check(s), slowest"
                    f" {slowest * 1e3:.1f} ms; other stream answered in {other_took * 1e3:.1f} ms"
                )

                by_id = {r.request_id: r for r in responses}
                assert sorted(by_id) == [1, 2, 3], responses
                error = by_id[2].error
                text, size = error.message, len(error.message.encode())
                assert error.code == INVALID, (error.code, text[:300])
                assert size <= MESSAGE_BOUND, (size, text[:300])
                assert words in text and text.startswith("request 2: "), text
                print(f"{kind}: {len(text)} chars: {text}")
                for i in (1, 3):
                    assert not by_id[i].HasField("error"), by_id[i]
                    np.testing.assert_array_equal(np.frombuffer(by_id[i].outputs[0].data, np.float32), GOOD * 2)
                assert answered_in < ANSWER_BOUND_S
                assert checks[0][1], "no health Check was issued while the bomb was in flight"
                assert slowest < HEALTH_BOUND_S and other_took < HEALTH_BOUND_S

                # the stream carries on
                await call.write(pb.InferStreamRequest(requests=[pb.InferRequest(request_id=2, inputs=good)]))
                again = (await next_message(call)).responses
                assert [(r.request_id, r.HasField("error")) for r in again] == [(2, False)]
                await call.done_writing()
                assert await asyncio.wait_for(call.code(), WAIT_S) is grpc.StatusCode.OK
            counts = await settled_counts(server)
            assert counts["outcomes"] == {"received": 6, "succeeded": 5, "invalid": 1}

    run(go())


@pytest.mark.parametrize("dims", [300_000, 3_000_000])
def test_wire_shape_of_too_many_dims_is_refused_in_time_independent_of_their_number(dims):
    """The wire's repeated field, not a tuple: comparing it to the model's shape would
    first copy every dim into a list (2 ms per 300,000), so its length is checked first."""
    specs = (TensorSpec("input", "float32", (16,)),)
    request = pb.InferRequest(request_id=9, inputs=[tensor(shape=[1000] * dims)])
    started = time.perf_counter()
    (arrival,) = arrivals([request], (), specs)
    took = time.perf_counter() - started
    print(f"{dims:,} wire dims refused in {took * 1e6:.0f} us")
    assert took < 0.01
    assert arrival.refused is not None and f"({dims:,} dims) has more than {MAX_DIMS} dims" in arrival.refused


def test_any_error_message_is_cut_to_max_message_chars_saying_how_long_it_was():
    """The last bound, for messages that quote nothing short (a backend's exception text)."""
    response = error_response(5, Failure(Code.INTERNAL, "backend failed: " + "x" * 17_000_000))
    assert len(response.error.message) == MAX_MESSAGE_CHARS
    assert response.error.message.startswith("backend failed: xxx")
    assert response.error.message.endswith("… (17,000,016 chars)")
    assert error_response(5, Failure(Code.INTERNAL, "short")).error.message == "short"


async def next_message(call) -> pb.InferStreamResponse:
    message = await asyncio.wait_for(call.read(), WAIT_S)
    assert message is not grpc.aio.EOF, "the call ended"
    return message
