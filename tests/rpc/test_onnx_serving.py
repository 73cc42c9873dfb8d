"""An ONNX model served end to end: the real server, real gRPC, the onnx backend."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from sidecar.backends.base import BackendError
from sidecar.client import SidecarClient
from sidecar.config import SidecarConfig
from sidecar.server.app import SidecarServer
from tests.backends.test_onnx import forward, random_layers, write_mlp
from tests.rpc.helpers import run, serving

STREAMS = 4
PER_STREAM = 80


def test_concurrent_requests_are_batched_and_each_answer_matches_numpy(tmp_path):
    layers = random_layers([16, 8], seed=5)
    path = write_mlp(tmp_path / "mlp.onnx", layers)
    x = np.random.default_rng(6).standard_normal((STREAMS, PER_STREAM, 16)).astype(np.float32)
    expected = forward(x.reshape(-1, 16), layers).reshape(STREAMS, PER_STREAM, 8)

    async def go():
        # One intra-op thread: the test machine is small, and the model is tiny.
        uri = f"{path}?intra_op_threads=1"
        # A histogram window above the batch count keeps every batch size in view.
        async with serving(backend="onnx", model_uri=uri, max_batch_size=16, histogram_window=4096) as server:

            async def one_stream(s: int) -> None:
                async with SidecarClient(server.address) as client:
                    if s == 0:
                        info = await client.model_info()
                        assert info.backend == "onnx"
                        assert [(t.name, t.dtype, list(t.shape)) for t in info.inputs] == [("input", "float32", [16])]
                        assert [(t.name, t.dtype, list(t.shape)) for t in info.outputs] == [("output", "float32", [8])]
                    results = await asyncio.gather(*(client.submit({"input": v}) for v in x[s]))
                    for i, out in enumerate(results):
                        np.testing.assert_allclose(out["output"], expected[s, i], rtol=1e-5, atol=1e-5)

            await asyncio.wait_for(asyncio.gather(*(one_stream(s) for s in range(STREAMS))), timeout=60)
            (batch_size,) = [m for m in server.metric_registry.snapshot() if m.identifier.endswith("gpuSidecar.batchSize")]
            assert batch_size.sum == STREAMS * PER_STREAM
            assert 1 < batch_size.max <= 16, f"no batching under concurrent load, or too much: {batch_size}"

    run(go())


async def refused_at_start_up(**overrides: object) -> str:
    """Start-up's error: the server listens first, so it is stopped after the failed load."""
    server = SidecarServer(SidecarConfig(endpoint="127.0.0.1:0", health_port=0, kserve_http_port=0, prometheus_port=0, **overrides))
    try:
        with pytest.raises(BackendError) as err:
            await server.start()
        assert not server.health.ready
        return str(err.value)
    finally:
        await server.stop()


def test_start_up_fails_naming_a_missing_model_file(tmp_path):
    missing = tmp_path / "absent.onnx"
    message = run(refused_at_start_up(backend="onnx", model_uri=str(missing)))
    assert message == f"onnx backend: model file {str(missing)!r} does not exist"


@pytest.mark.parametrize(
    "option, words",
    [
        (("onnx", "threads", "2"), "onnx backend: unknown option(s) 'threads'; known: graph_optimization"),
        (("onnx", "intra_op_threads", "lots"), "sidecar.backend.onnx.intra_op_threads: 'lots' is not an integer"),
    ],
)
def test_start_up_fails_naming_a_bad_configured_option(tmp_path, option, words):
    path = write_mlp(tmp_path / "mlp.onnx", random_layers([16, 8]))
    message = run(refused_at_start_up(backend="onnx", model_uri=str(path), backend_options=(option,)))
    assert words in message
