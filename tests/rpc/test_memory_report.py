"""GetMemoryReport: the figures the soak reads, from a real server."""

from __future__ import annotations

import asyncio
import inspect
import tracemalloc

import numpy as np

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.client import SidecarClient
from tests.rpc.helpers import run, serving


def test_reports_process_figures_and_every_structure_without_tracemalloc():
    async def go():
        async with serving() as server:
            async with SidecarClient(server.address) as client:
                await asyncio.gather(*[client.submit({"input": np.ones(16, np.float32)}) for _ in range(50)])
                report = await client.stub.GetMemoryReport(pb.MemoryReportRequest(), timeout=10)
        assert not report.tracing and report.traced_bytes == 0 and not report.top_growth
        assert report.rss_bytes > 10 * 2**20 and report.threads >= 5 and report.open_fds > 3
        names = set(report.structures)
        for expected in ("ingress.streams", "ingress.outboxes", "session.inflight_ids", "session.gone_uids",
                         "admission.streams", "batcher.queue.entries", "batcher.queue.deadline_heap", "batcher.stuck_hung"):
            assert expected in names, names
        assert report.structures["ingress.streams"] == 1  # the client's own stream
        assert report.structures["session.inflight_ids"] == 0

    run(go())


def test_growth_sites_are_measured_against_the_baseline_and_name_file_and_line():
    kept: list[bytes] = []
    line: list[int] = []

    async def go():
        async with serving() as server:
            async with SidecarClient(server.address) as client:
                first = await client.stub.GetMemoryReport(pb.MemoryReportRequest(set_baseline=True), timeout=30)
                assert first.tracing and first.has_baseline and not first.top_growth
                line.append(inspect.currentframe().f_lineno + 1)
                kept.extend(bytes(1000) for _ in range(2000))  # 2 MB on one line of this file
                report = await client.stub.GetMemoryReport(pb.MemoryReportRequest(top=5), timeout=30)
        top = report.top_growth[0]
        assert top.site.endswith(f"test_memory_report.py:{line[0]}"), top.site
        assert top.size_diff_bytes >= 2_000_000 and top.count_diff >= 2000
        assert len(report.top_growth) <= 5 and report.traced_bytes > 2_000_000

    tracemalloc.start()
    try:
        run(go())
    finally:
        tracemalloc.stop()
