"""A KServe call's window counts what it took off its stream and has not written
back, so a client that never reads holds at most a window (as on Infer)."""

from __future__ import annotations

import asyncio

import numpy as np

from sidecar.core.kserve_tensors import KTensor
from sidecar.core.tensors import ModelSpec, TensorSpec
from sidecar.kserve.calls import Call
from sidecar.kserve.types import KRequest, Model
from sidecar.server.ingress import Ingress
from tests.fakes import FakeClock
from tests.rpc.helpers import run

SPEC = ModelSpec((TensorSpec("input", "float32", (4,)),), (TensorSpec("output", "float32", (4,)),))
MODEL = Model("model", "1", "mock", SPEC, 8, 1, 0.0, max_items=1024)
WINDOW = 4


def request(i: int) -> KRequest:
    return KRequest("model", "", f"r{i}", [KTensor("input", "FP32", (1, 4), np.zeros(4, np.float32).tobytes())], [])


def test_results_taken_but_not_written_still_count_against_the_window():
    async def go() -> None:
        # No pipeline attached: the ingress answers every request UNAVAILABLE at once.
        ingress = Ingress(asyncio.get_running_loop(), FakeClock(), WINDOW)
        stream = ingress.open_stream()
        assert stream is not None
        call = Call(ingress, stream, MODEL, "grpc", early=False)
        for i in range(WINDOW):
            call.send(request(i))
        assert not call.may_read  # the window is full of answers to write
        ready = await call.results()
        assert len(ready) == WINDOW and stream.life.outstanding == 0
        assert not call.may_read  # taken off the stream, but not written: still held
        call.delivered(ready[0][2])
        assert call.may_read  # room for one
        call.refuse("bad", "not a request")  # a refusal holds a place too, until written
        assert not call.may_read
        refused = await call.results()
        call.delivered(refused[0][2])
        call.undelivered(ready[1][2])  # a write that failed frees its place as well
        for _, _, parts in ready[2:]:
            call.delivered(parts)
        assert call.may_read and call._unwritten == 0
        call.close()
        ingress.close_stream(stream, "done")

    run(go())
