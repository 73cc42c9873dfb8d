"""Server metrics equal what the clients counted, outcome by outcome, after a mixed workload.

Read three ways: the in-memory reporter, a real HTTP scrape of the Prometheus
endpoint, and the GetMetrics RPC.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections import Counter

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from actors.messages import FlushMetrics
from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.backends.mock import MockBackend
from sidecar.client import SidecarClient
from sidecar.config import SidecarConfig
from sidecar.metrics.reporters.memory import InMemoryReporter
from sidecar.server.app import SidecarServer
from tests.rpc.helpers import Gate, eventually, run

WAIT_S = 10.0
CLIENT_TO_SERVER = {
    "OK": "requestsSucceeded",
    "RESOURCE_EXHAUSTED": "requestsRejected",
    "UNAVAILABLE": "requestsRejected",
    "DEADLINE_EXCEEDED": "requestsExpired",
    "CANCELLED": "requestsCancelled",
    "INTERNAL": "requestsFailed",
    "INVALID_ARGUMENT": "requestsInvalid",
}
OUTCOMES = sorted(set(CLIENT_TO_SERVER.values()))
X = {"input": np.ones(16, np.float32)}


async def mixed_workload(server: SidecarServer, backend: MockBackend, gate: Gate, memory: InMemoryReporter) -> Counter:
    depth = memory.value("gpuSidecar.queueDepth")
    clients = {name: SidecarClient(server.address, max_in_flight=1000) for name in "ABCDE"}  # D overflows on purpose
    for c in clients.values():
        await c.connect()
    a, b, c, d, e = clients.values()

    # successes, and invalid requests among them
    bad = pb.InferRequest(request_id=10_000, inputs=[pb.Tensor(name="input", dtype="float32", shape=[3], data=b"")])
    await asyncio.gather(*[a.submit(X) for _ in range(100)], a.submit_raw(bad), return_exceptions=True)

    # hold one batch in the backend; the single executor slot is then taken
    gate.open.clear()
    before = backend.batches
    held = e.submit(X)
    await eventually(lambda: backend.batches > before, "the held batch to reach the backend")

    # a stream that goes away with 10 requests queued: withdrawn, cancelled
    for _ in range(10):
        c.submit(X)
    await eventually(lambda: depth.value == 10, "C's requests to queue")
    await c.cancel()
    await eventually(lambda: depth.value == 0, "C's requests to be withdrawn")

    # requests whose own timeout passes in the queue: expired
    await asyncio.gather(*[b.submit(X, timeout_s=0.05) for _ in range(10)], return_exceptions=True)

    # more than the queue holds: the rest rejected at once
    saturating = [d.submit(X) for _ in range(40)]
    await eventually(lambda: d.counts["RESOURCE_EXHAUSTED"] > 0, "rejections")

    gate.open.set()
    await asyncio.gather(held, *saturating, return_exceptions=True)
    for client in (a, b, d, e):
        await client.close()
    total: Counter = Counter()
    for client in clients.values():
        total.update(client.counts)
    return total


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT_S).read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "instance" not in sample.labels and "quantile" not in sample.labels:
                values[sample.name] = sample.value
    return values


def test_server_counts_equal_client_counts_for_every_outcome():
    async def go():
        gate = Gate()
        backend = MockBackend("mock:?base_ms=1&per_item_ms=0", sleep=gate)
        memory = InMemoryReporter()
        config = SidecarConfig(
            endpoint="127.0.0.1:0", health_port=0, kserve_http_port=0, prometheus_port=0, max_batch_size=4, max_inflight_batches=1,
            max_queue_length=20, max_queue_wait_s=10.0, batch_timeout_s=0.001,
        )
        server = SidecarServer(config, backends=[backend], reporters=[memory])
        await server.start()
        try:
            client = await mixed_workload(server, backend, gate, memory)
            metric = memory.value
            await eventually(lambda: metric("gpuSidecar.inflightRequests").value == 0, "nothing in flight")
            # Every client has closed, so every answer was written and every update
            # sent; the metrics actor takes updates lazily: have it take them now.
            await asyncio.to_thread(server.pipeline.peers.metrics.ask, FlushMetrics(), timeout=WAIT_S)

            expected = Counter()
            for code, n in client.items():
                if code in CLIENT_TO_SERVER:
                    expected[CLIENT_TO_SERVER[code]] += n
            server_counts = {name: metric(f"gpuSidecar.{name}").count for name in OUTCOMES}
            assert server_counts == {name: expected[name] for name in OUTCOMES}
            assert all(server_counts[n] > 0 for n in OUTCOMES if n != "requestsFailed"), server_counts
            assert client["lost"] == 0
            received = metric("gpuSidecar.requestsReceived").count
            assert received == client["sent"] == sum(server_counts.values())
            assert metric("gpuSidecar.queueDepth").value == 0

            # histogram counts: one batchSize and computeLatency per batch, one
            # queueWait per dispatched request, one endToEnd per written response
            batches = metric("gpuSidecar.batchesExecuted").count
            assert metric("gpuSidecar.batchSize").count == metric("gpuSidecar.computeLatency").count == batches
            assert metric("gpuSidecar.batchSize").sum == server_counts["requestsSucceeded"]
            assert metric("gpuSidecar.queueWaitLatency").count == server_counts["requestsSucceeded"]
            written = received - server_counts["requestsCancelled"]
            assert metric("gpuSidecar.endToEndLatency").count == written
            assert metric("gpuSidecar.deliveryLatency").count == written
            assert metric("gpuSidecar.instance.0.batchesExecuted").count == batches

            # the same numbers through a real Prometheus scrape ...
            scraped = scrape(server.prometheus_port)
            for name in OUTCOMES + ["requestsReceived", "batchesExecuted", "inflightRequests", "queueDepth"]:
                want = server_counts.get(name, metric(f"gpuSidecar.{name}").count if name not in
                                         ("inflightRequests", "queueDepth") else 0)
                assert scraped[f"flink_taskmanager_gpuSidecar_{name}"] == want, name
            assert scraped["flink_taskmanager_gpuSidecar_batchSize_count"] == batches
            assert scraped["flink_taskmanager_gpuSidecar_batchSize_sum"] == server_counts["requestsSucceeded"]

            # ... and through GetMetrics
            async with SidecarClient(server.address) as probe:
                snapshot = await probe.stub.GetMetrics(pb.GetMetricsRequest())
            by_name = {m.identifier.split("gpuSidecar.", 1)[1]: m for m in snapshot.metrics}
            assert {n: by_name[n].counter for n in OUTCOMES} == server_counts
            assert by_name["batchSize"].histogram.count == batches
            assert by_name["requestsReceived"].variables["tm_id"]
        finally:
            gate.open.set()
            await server.stop()

    run(go())


def test_response_timing_splits_latency_by_stage():
    async def go():
        backend = MockBackend("mock:?base_ms=5&per_item_ms=0")
        server = SidecarServer(
            SidecarConfig(endpoint="127.0.0.1:0", health_port=0, kserve_http_port=0, metrics_reporters=(), batch_timeout_s=0.02,
                          batch_dispatch="window"),  # the partial batch waits out its window, idle backend or not
            backends=[backend],
        )
        await server.start()
        try:
            async with SidecarClient(server.address) as client:
                timed = await asyncio.gather(*[client.submit_timed(X) for _ in range(3)])
                plain = await client.infer(X)
            assert all(t.batch_size == 3 for t in timed)
            assert all(0.004 <= t.compute_s < 1.0 for t in timed)  # the mock sleeps 5 ms
            assert all(0.015 <= t.queue_wait_s < 1.0 for t in timed)  # a partial batch waits out its 20 ms window
            assert isinstance(plain, dict)  # no timing unless asked
        finally:
            await server.stop()

    run(go())
