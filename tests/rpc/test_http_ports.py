"""The two HTTP ports, health and Prometheus, under load and abuse, over real
sockets on 127.0.0.1: a burst of scrapes, slow connections, the connection cap,
and the bind host each takes from its configuration key."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.config_loader import load
from sidecar.http_endpoint import HttpEndpoint, HttpLimits
from sidecar.metrics.group import root_group
from sidecar.metrics.registry import MetricRegistry
from sidecar.metrics.reporters.prometheus import PrometheusReporter
from sidecar.metrics.types import Histogram
from sidecar.server.app import SidecarServer
from sidecar.server.health import Health
from tests.http_client import WAIT_S, allow_open_files, get, open_slow, wait_until
from tests.rpc.helpers import run

SCRAPES = 500
SCRAPES_BOUND_S = 15.0  # measured ~0.1-0.4 s on the 2-core dev machine
SLOW = 200
PROMPT_S = 5.0  # an answer with the slow connections open; measured a few ms


@pytest.fixture(autouse=True, scope="module")
def _open_files():
    allow_open_files(4096)  # both ends of 500 connections, and the server's own


@dataclass
class Target:
    port: int
    path: str
    endpoint: HttpEndpoint
    ready_body: bytes


@contextlib.asynccontextmanager
async def started(kind: str, limits: HttpLimits) -> AsyncIterator[Target]:
    """Health on this loop, or a Prometheus reporter on its own thread, on 127.0.0.1."""
    if kind == "health":
        health = Health(http_limits=limits)
        await health.set_ready(True)
        port = await health.start_http(0, "127.0.0.1")
        assert health.http is not None
        try:
            yield Target(port, "/health", health.http, b"READY\n")
        finally:
            await health.stop_http()
    else:
        reporter = PrometheusReporter(port=0, host="127.0.0.1", http_limits=limits)
        registry = MetricRegistry([reporter])
        root_group(registry, "h1", "tm-1").add_group("gpuSidecar").gauge("queueDepth", lambda: 3)
        await asyncio.to_thread(registry.start)
        assert reporter.endpoint is not None
        try:
            yield Target(reporter.port, "/metrics", reporter.endpoint, b"flink_taskmanager_gpuSidecar_queueDepth")
        finally:
            await asyncio.to_thread(registry.close)


def test_500_parallel_scrapes_all_answer_200_with_a_parseable_exposition():
    async def go():
        config = load(flags=[
            ("sidecar.rpc.endpoint", "127.0.0.1:0", "-D"),
            ("sidecar.health.port", "0", "-D"),
            ("sidecar.metrics.prometheus.port", "0", "-D"),
            ("sidecar.metrics.prometheus.host", "127.0.0.1", "-D"),
            ("sidecar.model.instances", "4", "-D"),
        ]).config
        server = SidecarServer(config)
        await server.start()
        try:
            server.metric_group.histogram("scrapeTestMs", Histogram()).update_many([1.0, 2.0, 3.0])
            (reporter,) = [r for r in server.metric_registry.reporters if isinstance(r, PrometheusReporter)]
            renders_before = reporter.renders

            async def scrape():
                answer = await get(server.prometheus_port, "/metrics", timeout=SCRAPES_BOUND_S)
                return answer, time.monotonic() - begun

            begun = time.monotonic()
            results = await asyncio.wait_for(asyncio.gather(*(scrape() for _ in range(SCRAPES))), SCRAPES_BOUND_S)
            total = time.monotonic() - begun
            slowest = max(t for _, t in results)
            renders = reporter.renders - renders_before
            print(f"\n{SCRAPES} parallel scrapes: all answered in {total:.3f} s, slowest {slowest:.3f} s, "
                  f"{renders} renders, {len(results[0][0].body)} bytes each")

            assert [a.status for a, _ in results] == [200] * SCRAPES
            assert {a.headers["content-type"] for a, _ in results} == {"text/plain; version=0.0.4; charset=utf-8"}
            for body in {a.body for a, _ in results}:  # identical bodies parse alike
                names = {f.name for f in text_string_to_metric_families(body.decode())}
                assert {"flink_taskmanager_gpuSidecar_scrapeTestMs", "flink_taskmanager_gpuSidecar_queueDepth"} <= names
            assert total < SCRAPES_BOUND_S
        finally:
            await server.stop()

    run(go())


@pytest.mark.parametrize("kind", ["health", "prometheus"])
def test_200_slow_connections_do_not_block_an_answer(kind):
    async def go():
        async with started(kind, HttpLimits(head_timeout_s=60)) as target:
            slow = await open_slow(target.port, SLOW, target.path)
            await wait_until(lambda: target.endpoint.open_connections == SLOW, f"{SLOW} slow connections open")
            begun = time.monotonic()
            answer = await get(target.port, target.path, timeout=PROMPT_S)
            took = time.monotonic() - begun
            print(f"\n{kind}: answered in {took * 1000:.1f} ms with {SLOW} slow connections open")
            assert answer.status == 200 and target.ready_body in answer.body
            assert took < PROMPT_S
            assert target.endpoint.open_connections >= SLOW  # they were open all along
            assert not any(s.done.done() for s in slow)
            stopping = time.monotonic()
        # Stopping the endpoint drops them at once, long before their timeout.
        await asyncio.wait_for(asyncio.gather(*(s.done for s in slow)), WAIT_S)
        stopped = time.monotonic() - stopping
        print(f"{kind}: stopped, and all {SLOW} dropped, in {stopped * 1000:.1f} ms")
        assert all(s.received == b"" for s in slow)
        assert stopped < PROMPT_S

    run(go())


@pytest.mark.parametrize("kind", ["health", "prometheus"])
def test_slow_connections_are_closed_by_the_head_timeout(kind):
    timeout_s = 0.5

    async def go():
        async with started(kind, HttpLimits(head_timeout_s=timeout_s)) as target:
            begun = time.monotonic()  # before any of them connects
            slow = await open_slow(target.port, SLOW, target.path)
            await asyncio.wait_for(asyncio.gather(*(s.done for s in slow)), timeout_s + WAIT_S)
            closed_after = sorted((s.closed_at or 0.0) - begun for s in slow)
            print(f"\n{kind}: {SLOW} slow connections closed after {closed_after[0]:.2f}-{closed_after[-1]:.2f} s "
                  f"(head timeout {timeout_s} s)")
            assert all(s.received == b"" for s in slow)  # closed unanswered
            assert closed_after[0] >= timeout_s * 0.9  # by the timeout, not sooner
            await wait_until(lambda: target.endpoint.open_connections == 0, "no connection left open")
            assert (await get(target.port, target.path)).status == 200

    run(go())


@pytest.mark.parametrize("kind", ["health", "prometheus"])
def test_connection_past_the_cap_gets_503_at_once_and_the_endpoint_keeps_serving(kind):
    cap = 20

    async def go():
        async with started(kind, HttpLimits(max_connections=cap, head_timeout_s=60)) as target:
            slow = await open_slow(target.port, cap, target.path)
            await wait_until(lambda: target.endpoint.open_connections == cap, f"{cap} connections open")
            begun = time.monotonic()
            refused = await asyncio.gather(*(get(target.port, target.path) for _ in range(5)))
            assert [a.status for a in refused] == [503] * 5
            assert time.monotonic() - begun < PROMPT_S
            assert target.endpoint.refused == 5 and target.endpoint.open_connections == cap
            for s in slow[: cap // 2]:
                s.close()
            await wait_until(lambda: target.endpoint.open_connections <= cap // 2, "slots freed")
            answers = await asyncio.gather(*(get(target.port, target.path) for _ in range(5)))
            assert [a.status for a in answers] == [200] * 5
            for s in slow[cap // 2:]:
                s.close()

    run(go())


def test_bind_hosts_come_from_the_config_keys():
    async def go():
        def config(**hosts: str):
            flags = [("sidecar.rpc.endpoint", "127.0.0.1:0", "-D"), ("sidecar.health.port", "0", "-D"),
                     ("sidecar.metrics.prometheus.port", "0", "-D")]
            return load(flags=flags + [(k, v, "-D") for k, v in hosts.items()]).config

        for hosts, expected in [
            ({"sidecar.health.host": "127.0.0.1", "sidecar.metrics.prometheus.host": "127.0.0.1"}, "127.0.0.1"),
            ({}, "0.0.0.0"),  # the keys' default: every interface
        ]:
            server = SidecarServer(config(**hosts))
            await server.listen()
            try:
                (reporter,) = [r for r in server.metric_registry.reporters if isinstance(r, PrometheusReporter)]
                assert server.health.http is not None and reporter.endpoint is not None
                assert server.health.http.address == (expected, server.health_port)
                assert reporter.endpoint.address == (expected, server.prometheus_port)
                assert (await get(server.health_port, "/health")).status == 503  # listening, not loaded
                assert (await get(server.prometheus_port, "/metrics")).status == 200
            finally:
                await server.stop()

    run(go())


def test_server_ports_answer_with_slow_connections_open_on_both():
    async def go():
        config = load(flags=[
            ("sidecar.rpc.endpoint", "127.0.0.1:0", "-D"),
            ("sidecar.health.port", "0", "-D"), ("sidecar.health.host", "127.0.0.1", "-D"),
            ("sidecar.metrics.prometheus.port", "0", "-D"), ("sidecar.metrics.prometheus.host", "127.0.0.1", "-D"),
        ]).config
        server = SidecarServer(config)
        await server.start()
        try:
            slow = [*await open_slow(server.health_port, SLOW, "/health"),
                    *await open_slow(server.prometheus_port, SLOW, "/metrics")]
            begun = time.monotonic()
            health = await get(server.health_port, "/health", timeout=PROMPT_S)
            metrics = await get(server.prometheus_port, "/metrics", timeout=PROMPT_S)
            took = time.monotonic() - begun
            print(f"\nserver defaults: health and a scrape answered in {took * 1000:.1f} ms with {SLOW} slow "
                  f"connections open on each port")
            assert (health.status, health.body) == (200, b"READY\n")
            assert metrics.status == 200 and b"flink_taskmanager_gpuSidecar_" in metrics.body
            assert took < PROMPT_S
            for s in slow:
                s.close()
        finally:
            await server.stop()

    run(go())
