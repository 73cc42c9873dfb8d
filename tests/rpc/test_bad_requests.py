"""A bad request gets INVALID_ARGUMENT; its neighbours on the same stream succeed."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.client import InferError, SidecarClient
from tests.rpc.helpers import run, server_counts, serving

GOOD = np.arange(16, dtype=np.float32)


def good_tensor() -> pb.Tensor:
    return pb.Tensor(name="input", dtype="float32", shape=[16], data=GOOD.tobytes())


BAD = {
    "unknown dtype": (pb.Tensor(name="input", dtype="float128", shape=[16], data=b"\0" * 256), "unknown dtype 'float128'"),
    "byte length": (pb.Tensor(name="input", dtype="float32", shape=[16], data=b"\0" * 63), "63 bytes, but float32 x [16] needs 64"),
    "input name": (pb.Tensor(name="pixels", dtype="float32", shape=[16], data=GOOD.tobytes()), "unknown input name(s) ['pixels']"),
    "shape": (pb.Tensor(name="input", dtype="float32", shape=[4, 4], data=GOOD.tobytes()), "per-item shape [16]"),
}


@pytest.mark.parametrize("max_pack", [64, 1], ids=["same-message", "own-message"])
@pytest.mark.parametrize("kind", list(BAD))
def test_bad_request_is_invalid_argument_and_neighbours_succeed(kind, max_pack):
    bad_tensor, words = BAD[kind]

    async def go():
        async with serving() as server:
            async with SidecarClient(server.address, max_pack=max_pack) as client:
                before = [client.submit({"input": GOOD}) for _ in range(5)]
                bad = client.submit_raw(pb.InferRequest(request_id=10_000, inputs=[bad_tensor]))
                after = [client.submit({"input": GOOD}) for _ in range(5)]
                for out in await asyncio.gather(*before, *after):
                    np.testing.assert_array_equal(out["output"], GOOD * 2)
                with pytest.raises(InferError) as err:
                    await bad
                assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT
                assert words in err.value.message and "request 10000" in err.value.message
                # the stream is still open and serving
                np.testing.assert_array_equal((await client.infer({"input": GOOD}))["output"], GOOD * 2)
            counts = await server_counts(server)
            assert counts["outcomes"] == {"received": 12, "succeeded": 11, "invalid": 1}

    run(go())


def test_id_already_in_flight_on_the_stream_is_refused_and_original_answered():
    async def go():
        async with serving(model_uri="mock:?base_ms=50") as server:
            async with SidecarClient(server.address) as client:
                call = client.stub.Infer()
                request = pb.InferRequest(request_id=7, inputs=[good_tensor()])
                await call.write(pb.InferStreamRequest(requests=[request, request]))
                await call.done_writing()
                responses = [r async for m in call for r in m.responses]
                assert [r.request_id for r in responses] == [7, 7]
                codes = sorted(r.error.code for r in responses)
                assert codes == [0, grpc.StatusCode.INVALID_ARGUMENT.value[0]]
                assert "already in flight" in next(r.error.message for r in responses if r.error.code)

    run(go())


def test_non_positive_timeout_is_invalid():
    async def go():
        async with serving() as server:
            async with SidecarClient(server.address) as client:
                request = pb.InferRequest(request_id=1, inputs=[good_tensor()])
                request.timeout.FromMilliseconds(0)
                with pytest.raises(InferError) as err:
                    await client.submit_raw(request)
                assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT
                assert "timeout must be positive" in err.value.message

    run(go())
