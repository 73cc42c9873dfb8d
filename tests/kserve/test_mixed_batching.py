"""Native and KServe requests share one queue and one batcher: queued together,
they run in the same batch."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np

from sidecar.backends.mock import MockBackend
from sidecar.client import SidecarClient
from tests.kserve.helpers import KServeGrpc, flink_body, infer_request, post_json
from tests.rpc.helpers import Gate, eventually, queue_depth_reaches, run, serving, settled_counts

NATIVE, HTTP, GRPC = 0, 1000, 2000  # each kind's rows start at its own value


class RecordingMock(MockBackend):
    """Remembers, per batch, the first value of every row: which kind sent it."""

    def __init__(self, gate: Gate) -> None:
        super().__init__("mock:?base_ms=1&per_item_ms=0", sleep=gate)
        self.seen: list[list[float]] = []

    def infer(self, inputs):
        self.seen.append([float(row[0]) for row in inputs["input"]])
        return super().infer(inputs)


def _kind(value: float) -> str:
    return "native" if value < HTTP else "http" if value < GRPC else "grpc"


def test_native_http_and_grpc_items_queued_together_run_in_one_batch():
    gate = Gate(opened=False)
    backend = RecordingMock(gate)

    async def go() -> None:
        async with serving(backends=[backend], max_batch_size=64, max_inflight_batches=1, histogram_window=4096) as server:
            async with SidecarClient(server.address) as client, grpc.aio.insecure_channel(server.address) as channel:
                kserve = KServeGrpc(channel)
                first = client.submit({"input": np.full(16, NATIVE + 999, np.float32)})  # holds the one executor
                await eventually(lambda: len(backend.seen) == 1, "the first batch to reach the backend")
                native = [client.submit({"input": np.full(16, NATIVE + i, np.float32)}) for i in range(10)]
                http = [asyncio.ensure_future(post_json(server.kserve_http_port, "/v2/models/model/versions/latest/infer",
                                                        flink_body([float(HTTP + i)] * 16))) for i in range(10)]
                grpc_rows = np.array([np.full(16, GRPC + i, np.float32) for i in range(10)])
                grpc_call = asyncio.ensure_future(kserve.ModelInfer(infer_request("model", {"input": grpc_rows})))
                await queue_depth_reaches(server, 30)
                gate.open.set()
                results = await asyncio.wait_for(asyncio.gather(first, *native), 10)
                answers = await asyncio.wait_for(asyncio.gather(*http), 10)
                response = await asyncio.wait_for(grpc_call, 10)

            for i, out in enumerate(results[1:]):
                np.testing.assert_array_equal(out["output"], np.full(16, 2.0 * (NATIVE + i)))
            for i, a in enumerate(answers):
                assert a.status == 200, a.body
                np.testing.assert_array_equal(a.json()["outputs"][0]["data"], [2.0 * (HTTP + i)] * 16)
            got = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(10, 16)
            np.testing.assert_array_equal(got, grpc_rows * 2)

            mixed = [b for b in backend.seen if len({_kind(v) for v in b}) == 3]
            assert mixed, f"no batch held all three kinds: {[[_kind(v) for v in b] for b in backend.seen]}"
            assert max(len(b) for b in mixed) > 3
            counts = await settled_counts(server)
            assert counts["outcomes"] == {"received": 31, "succeeded": 31}
            assert counts["kserve"] == {"grpc": {"requests": 1, "failed": 0}, "http": {"requests": 10, "failed": 0}}

    run(go())
