"""The KServe baseline: bare grpc.aio and aiohttp servers speaking the Open
Inference Protocol, answering each infer at once with its input as `output`.

No actors, no queue, no batching: what the sidecar's KServe front ends add is
measured against this, on the same machine in the same run (docs/kserve.md).
It advertises no `statistics`, so perf_analyzer does not ask for them; GET /count
on its HTTP port gives the items it answered.

    python -m sidecar.bench.kserve_echo GRPC_HOST:PORT HTTP_PORT [DIM]
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import json_format

from sidecar.api.kserve.v2 import inference_pb2 as kpb
from sidecar.core.kserve_tensors import KTensor
from sidecar.core.tensors import ModelSpec, TensorSpec
from sidecar.kserve import grpc_service, http_app, views
from sidecar.kserve.types import KResult, Model


def echo_model(dim: int) -> Model:
    spec = ModelSpec((TensorSpec("input", "float32", (dim,)),), (TensorSpec("output", "float32", (dim,)),))
    return Model("model", "1", "echo", spec, 32, 1, 0.0, max_items=1024)


# Items answered (a request of shape [N, ...] is N), both protocols: GET /count,
# for CPU per item as the sidecar counts them.
ANSWERED = [0]


def _echo(request: kpb.ModelInferRequest) -> kpb.ModelInferResponse:
    ANSWERED[0] += request.inputs[0].shape[0] if request.inputs and request.inputs[0].shape else 1
    response = kpb.ModelInferResponse(model_name="model", model_version="1", id=request.id)
    for t in request.inputs[:1]:
        response.outputs.add(name="output", datatype=t.datatype, shape=t.shape)
    response.raw_output_contents.extend(request.raw_input_contents[:1])
    return response


class EchoGrpc:
    def __init__(self, model: Model) -> None:
        self._metadata = json_format.ParseDict(views.model_metadata(model), kpb.ModelMetadataResponse())
        self._config = kpb.ModelConfigResponse(config=json_format.ParseDict(views.model_config(model), kpb.ModelConfig()))

    async def ServerLive(self, request: Any, context: Any) -> kpb.ServerLiveResponse:
        return kpb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> kpb.ServerReadyResponse:
        return kpb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: Any) -> kpb.ModelReadyResponse:
        return kpb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: Any, context: Any) -> kpb.ServerMetadataResponse:
        return kpb.ServerMetadataResponse(name="kserve-echo", version="0", extensions=["binary_tensor_data"])

    async def ModelMetadata(self, request: Any, context: Any) -> kpb.ModelMetadataResponse:
        return self._metadata

    async def ModelConfig(self, request: Any, context: Any) -> kpb.ModelConfigResponse:
        return self._config

    async def ModelStatistics(self, request: Any, context: Any) -> kpb.ModelStatisticsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the echo keeps no statistics")

    async def ModelInfer(self, request: kpb.ModelInferRequest, context: Any) -> kpb.ModelInferResponse:
        return _echo(request)

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[Any], context: Any) -> None:
        async for request in request_iterator:
            await context.write(kpb.ModelStreamInferResponse(infer_response=_echo(request)))


def echo_http(model: Model) -> web.Application:
    async def infer(request: web.Request) -> web.Response:
        body = await request.read()
        k, binary = http_app.to_request(body, request.headers.get(http_app.HEADER_LENGTH), "model", "", 1 << 26)
        t = k.inputs[0]
        ANSWERED[0] += t.shape[0] if t.shape else 1
        return http_app.to_response(KResult(k.id, (KTensor("output", t.datatype, t.shape, t.data),)), model, binary)

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    app = web.Application(client_max_size=1 << 26)
    app.router.add_get("/v2/health/live", ok)
    app.router.add_get("/v2/health/ready", ok)
    app.router.add_get("/v2", _json(lambda: {"name": "kserve-echo", "version": "0", "extensions": ["binary_tensor_data"]}))
    app.router.add_get("/v2/models/model", _json(lambda: views.model_metadata(model)))
    app.router.add_get("/v2/models/model/config", _json(lambda: views.model_config(model)))
    app.router.add_post("/v2/models/model/infer", infer)
    app.router.add_get("/count", _json(lambda: {"answered": ANSWERED[0]}))
    return app


def _json(doc: Any) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(doc())

    return handler


async def serve(endpoint: str, http_port: int, dim: int) -> None:
    model = echo_model(dim)
    server = grpc.aio.server()
    grpc_service.add_to_server(EchoGrpc(model), server)  # type: ignore[arg-type]
    port = server.add_insecure_port(endpoint)
    await server.start()
    runner = web.AppRunner(echo_http(model), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    print(f"kserve echo serving on {endpoint.rsplit(':', 1)[0]}:{port} and http port {runner.addresses[0][1]}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    import uvloop

    args = sys.argv[1:]
    uvloop.run(serve(args[0] if args else "127.0.0.1:0", int(args[1]) if len(args) > 1 else 0,
                     int(args[2]) if len(args) > 2 else 16))
