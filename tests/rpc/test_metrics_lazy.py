"""Lazily delivered metrics (actors/metrics.py) reach the metric objects with no
flush: the ticker takes what lazy senders leave waiting, however traffic ends."""

from __future__ import annotations

import asyncio

import numpy as np

from sidecar.client import SidecarClient
from sidecar.config import SidecarConfig
from sidecar.metrics.reporters.memory import InMemoryReporter
from sidecar.server.app import SidecarServer
from tests.rpc.helpers import eventually, run


def test_counts_reach_a_reader_that_never_flushes():
    async def go():
        memory = InMemoryReporter()
        config = SidecarConfig(endpoint="127.0.0.1:0", health_port=0, kserve_http_port=0, prometheus_port=0,
                               model_uri="mock:?base_ms=0&per_item_ms=0")
        server = SidecarServer(config, reporters=[memory])
        await server.start()
        try:
            async with SidecarClient(server.address) as client:
                await asyncio.gather(*[client.submit({"input": np.zeros(16, np.float32)}) for _ in range(50)])
            metric = memory.value
            # Read through the reporter only: no GetCounts, no GetMetrics, nothing that drains.
            await eventually(
                lambda: metric("gpuSidecar.requestsReceived").count == 50
                and metric("gpuSidecar.requestsSucceeded").count == 50
                and metric("gpuSidecar.endToEndLatency").count == 50
                and metric("gpuSidecar.queueDepth").value == 0,
                "the lazily sent updates to arrive",
            )
        finally:
            await server.stop()

    run(go())
