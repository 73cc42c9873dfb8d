"""The baseline: a bare grpc.aio server speaking the same Infer stream.

It answers each request at once with its own inputs as outputs: no actors, no
queue, no batching. What the sidecar adds is measured against this ceiling.

    python -m sidecar.bench.echo 127.0.0.1:0
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.api.v1 import gpu_sidecar_pb2_grpc as pb_grpc


class EchoServicer(pb_grpc.GpuSidecarServicer):
    async def Infer(
        self, request_iterator: AsyncIterator[pb.InferStreamRequest], context: Any
    ) -> AsyncIterator[pb.InferStreamResponse]:
        async for message in request_iterator:
            yield pb.InferStreamResponse(
                responses=[pb.InferResponse(request_id=r.request_id, outputs=r.inputs) for r in message.requests]
            )

    async def Ping(self, request: pb.PingRequest, context: Any) -> pb.PingResponse:
        return pb.PingResponse(version="echo")


async def serve(endpoint: str) -> None:
    server = grpc.aio.server()
    pb_grpc.add_GpuSidecarServicer_to_server(EchoServicer(), server)
    health_servicer = health.aio.HealthServicer()  # SERVING at once: the load generator waits for it
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(endpoint)
    await server.start()
    print(f"echo serving on {endpoint.rsplit(':', 1)[0]}:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    import uvloop

    uvloop.run(serve(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:0"))
