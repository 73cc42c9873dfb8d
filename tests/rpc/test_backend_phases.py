"""What the executor does with a backend's grown interface (sidecar/backends/base.py),
through the real server: warm-up before READY, joining into the backend's own
buffers (one copy), and a pipelined backend's batches overlapping."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from actors.messages import GetSnapshot
from sidecar.backends.base import Backend, BackendInfo
from sidecar.client import SidecarClient
from sidecar.core.tensors import ModelSpec, TensorSpec
from tests.rpc.helpers import WAIT_S, eventually, run, serving

SPEC = ModelSpec(inputs=(TensorSpec("input", "float32", (4,)),), outputs=(TensorSpec("output", "float32", (4,)),))


class Recording(Backend):
    """Doubles its input; records what the executor asked of it, in order."""

    name = "recording"

    def __init__(self) -> None:
        super().__init__("recording:")
        self.calls: list[tuple[str, Any]] = []
        self.buffers: dict[int, np.ndarray] = {}

    def load(self) -> BackendInfo:
        self.calls.append(("load", None))
        return BackendInfo(SPEC)

    def warm_up(self, spec: ModelSpec, sizes: Sequence[int]) -> None:
        self.calls.append(("warm_up", tuple(sizes)))

    def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return {"output": inputs["input"] * 2}


class OwnBuffers(Recording):
    def input_buffers(self, n: int) -> Mapping[str, np.ndarray]:
        buffer = self.buffers.setdefault(n, np.full((n, 4), -1.0, np.float32))
        return {"input": buffer}

    def submit(self, inputs: Mapping[str, np.ndarray]) -> Any:
        handed = self.buffers[len(inputs["input"])]
        self.calls.append(("submit", inputs["input"] is handed))
        return super().submit(inputs)


class Pipelined(Recording):
    """submit returns a handle at once; collect computes. The first submit waits for the
    test's gate, so that the second batch is in the executor's mailbox meanwhile."""

    pipelined = True

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.first_submitted = threading.Event()

    def submit(self, inputs: Mapping[str, np.ndarray]) -> Any:
        tag = float(inputs["input"][0, 0])
        self.calls.append(("submit", tag))
        if not self.first_submitted.is_set():
            self.first_submitted.set()
            assert self.gate.wait(WAIT_S)
        return tag, np.array(inputs["input"])

    def collect(self, handle: Any) -> Mapping[str, np.ndarray]:
        tag, x = handle
        self.calls.append(("collect", tag))
        return {"output": x * 2}


def test_warm_up_covers_the_batch_sizes_up_to_the_max_before_the_server_serves():
    async def go():
        backend = Recording()
        async with serving(backends=[backend], max_batch_size=12) as server:
            assert backend.calls == [("load", None), ("warm_up", (1, 2, 4, 8, 12))]
            assert server.health.ready  # READY only now, after the warm-up
            async with SidecarClient(server.address) as client:
                out = await client.infer({"input": np.ones(4, np.float32)})
            np.testing.assert_array_equal(out["output"], np.full(4, 2, np.float32))

    run(go())


def test_a_batch_is_joined_straight_into_the_buffers_the_backend_hands_out():
    async def go():
        backend = OwnBuffers()
        async with serving(backends=[backend], max_batch_size=8) as server:
            async with SidecarClient(server.address) as client:
                values = [np.full(4, i, np.float32) for i in range(20)]
                outs = await asyncio.gather(*[client.submit({"input": v}) for v in values])
        for v, out in zip(values, outs):
            np.testing.assert_array_equal(out["output"], v * 2)
        submits = [ok for what, ok in backend.calls if what == "submit"]
        assert submits and all(submits)  # every batch arrived in the backend's own buffer

    run(go())


def test_a_pipelined_backend_starts_the_next_batch_before_it_collects_the_first():
    async def go():
        backend = Pipelined()
        async with serving(backends=[backend], max_batch_size=1, max_inflight_batches=2) as server:
            async with SidecarClient(server.address) as client:
                first = client.submit({"input": np.full(4, 1, np.float32)})
                await eventually(backend.first_submitted.is_set, "the first batch to be submitted")
                second = client.submit({"input": np.full(4, 2, np.float32)})
                await eventually(
                    lambda: server.pipeline.peers.batcher.ask(GetSnapshot(), timeout=WAIT_S)["inflight_batches"]
                    == (2,),
                    "the second batch to reach the executor",
                )
                backend.gate.set()
                a, b = await asyncio.gather(first, second)
        np.testing.assert_array_equal(a["output"], np.full(4, 2, np.float32))
        np.testing.assert_array_equal(b["output"], np.full(4, 4, np.float32))
        phases = [c for c in backend.calls if c[0] in ("submit", "collect")]
        assert phases == [("submit", 1.0), ("submit", 2.0), ("collect", 1.0), ("collect", 2.0)]

    run(go())
