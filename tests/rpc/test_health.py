"""Readiness through grpc.health.v1 and HTTP GET /health: before load, after, while draining."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sidecar.backends.mock import MockBackend
from sidecar.client import InferError, SidecarClient
from sidecar.config import SidecarConfig
from sidecar.server.app import SidecarServer
from tests.rpc.helpers import Gate, run

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
WAIT_S = 10


async def http_health(port: int, method: str = "GET", path: str = "/health") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    response = (await reader.read()).decode()
    writer.close()
    status_line, _, body = response.partition("\r\n")
    return int(status_line.split()[1]), body.split("\r\n\r\n", 1)[1]


async def grpc_health(address: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
        return reply.status


def test_not_ready_while_loading_ready_after_not_ready_while_draining():
    async def go():
        gate = Gate(opened=False)
        backend = MockBackend("mock:?load_ms=1&base_ms=1&per_item_ms=0", sleep=gate)
        server = SidecarServer(SidecarConfig(endpoint="127.0.0.1:0", health_port=0, kserve_http_port=0), backends=[backend])
        await server.listen()
        loading = asyncio.ensure_future(server.load())
        try:
            # -- loading: NOT_READY everywhere, requests answered UNAVAILABLE
            assert await http_health(server.health_port) == (503, "NOT_READY\n")
            assert await grpc_health(server.address) == NOT_SERVING
            assert await grpc_health(server.address, "gpusidecar.v1.GpuSidecar") == NOT_SERVING
            async with SidecarClient(server.address) as client:
                with pytest.raises(InferError) as err:
                    await client.infer({"input": np.ones(16, np.float32)})
                assert err.value.code is grpc.StatusCode.UNAVAILABLE and "not loaded yet" in err.value.message
                with pytest.raises(grpc.aio.AioRpcError) as info_err:
                    await client.model_info()
                assert info_err.value.code() is grpc.StatusCode.UNAVAILABLE

            # -- loaded: READY
            gate.open.set()
            await asyncio.wait_for(loading, WAIT_S)
            assert await http_health(server.health_port) == (200, "READY\n")
            assert await grpc_health(server.address) == SERVING

            # -- draining with one batch held in the backend: NOT_READY, new work refused
            gate.open.clear()
            async with SidecarClient(server.address) as client:
                held = client.submit({"input": np.ones(16, np.float32)})
                while backend.batches < 1:
                    await asyncio.sleep(0.01)
                draining = asyncio.ensure_future(server.drain(timeout_s=WAIT_S))
                while server.health.ready:
                    await asyncio.sleep(0.01)
                assert await http_health(server.health_port) == (503, "NOT_READY\n")
                assert await grpc_health(server.address) == NOT_SERVING
                with pytest.raises(InferError) as err:
                    await client.infer({"input": np.ones(16, np.float32)})
                assert err.value.code is grpc.StatusCode.UNAVAILABLE and "draining" in err.value.message
                gate.open.set()
                assert (await held)["output"][0] == 2.0
            report = await asyncio.wait_for(draining, WAIT_S)
            assert report.completed and report.abandoned == 0
        finally:
            gate.open.set()
            await server.stop()

    run(go())


def test_http_health_answers_only_get_on_its_path():
    async def go():
        server = SidecarServer(SidecarConfig(endpoint="127.0.0.1:0", health_port=0, kserve_http_port=0))
        await server.start()
        try:
            assert (await http_health(server.health_port, "GET", "/metrics"))[0] == 404
            assert (await http_health(server.health_port, "POST"))[0] == 405
            assert (await http_health(server.health_port, "GET", "/health?verbose=1"))[0] == 200
        finally:
            await server.stop()

    run(go())


def test_reflection_lists_the_services():
    async def go():
        server = SidecarServer(SidecarConfig(endpoint="127.0.0.1:0", health_port=0, kserve_http_port=0))
        await server.start()
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = reflection_pb2_grpc.ServerReflectionStub(channel)
                request = reflection_pb2.ServerReflectionRequest(list_services="")
                async for reply in stub.ServerReflectionInfo(iter([request])):
                    names = {s.name for s in reply.list_services_response.service}
                    break
            assert {"gpusidecar.v1.GpuSidecar", "grpc.health.v1.Health"} <= names
        finally:
            await server.stop()

    run(go())
