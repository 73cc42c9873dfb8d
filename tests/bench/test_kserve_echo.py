"""The KServe baseline answers what perf_analyzer asks, with each input as its output."""

from __future__ import annotations

import json

import grpc
import numpy as np
from aiohttp import web

from sidecar.api.kserve.v2 import inference_pb2 as kpb
from sidecar.bench import kserve_echo
from sidecar.kserve import grpc_service
from tests.kserve.helpers import KServeGrpc, http, infer_request
from tests.rpc.helpers import run


def test_the_echo_answers_metadata_and_echoes_infer_over_grpc_and_http():
    async def go() -> None:
        model = kserve_echo.echo_model(8)
        server = grpc.aio.server()
        grpc_service.add_to_server(kserve_echo.EchoGrpc(model), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        runner = web.AppRunner(kserve_echo.echo_http(model), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        http_port = runner.addresses[0][1]
        try:
            x = np.arange(16, dtype=np.float32).reshape(2, 8)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                k = KServeGrpc(channel)
                meta = await k.ModelMetadata(kpb.ModelMetadataRequest(name="model"))
                assert list(meta.inputs[0].shape) == [-1, 8]
                assert "statistics" not in (await k.ServerMetadata(kpb.ServerMetadataRequest())).extensions
                response = await k.ModelInfer(infer_request("model", {"input": x}, "e1"))
                assert response.id == "e1" and response.raw_output_contents[0] == x.tobytes()
                call = k.ModelStreamInfer()
                await call.write(infer_request("model", {"input": x}, "s1"))
                assert (await call.read()).infer_response.raw_output_contents[0] == x.tobytes()
                await call.done_writing()
            doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 8], "data": x.ravel().tolist()}]}
            answer = await http(http_port, "POST", "/v2/models/model/infer", json.dumps(doc).encode())
            assert answer.json()["outputs"][0]["data"] == x.ravel().tolist()
            assert (await http(http_port, "GET", "/count")).json()["answered"] == 6  # 3 requests of 2 items
        finally:
            await runner.cleanup()
            await server.stop(None)

    run(go())
