"""A TorchScript model served through the real server (real gRPC, real actors) by
the torch backend: every answer is the module's own, and requests are batched."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the torch extra: pip install -e '.[torch]'")

from sidecar.client import SidecarClient
from tests.rpc.helpers import run, serving

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

STREAMS = 4
PER_STREAM = 100
SPEC = "inputs=input:float32:16&outputs=output:float32:8"


def save_scripted(path: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU()).eval()
    torch.jit.save(torch.jit.script(module), str(path))
    return module


async def _serve_many(model_uri: str, module: torch.nn.Module, instances: int = 1) -> None:
    async with serving(
        backend="torch", model_uri=model_uri, max_batch_size=16, histogram_window=4096, instances=instances
    ) as server:

        async def one_stream(s: int) -> None:
            values = np.random.default_rng(s).standard_normal((PER_STREAM, 16)).astype(np.float32)
            async with SidecarClient(server.address) as client:
                results = await asyncio.gather(*(client.submit({"input": v}) for v in values))
            with torch.no_grad():
                want = module(torch.from_numpy(values)).numpy()
            for i, out in enumerate(results):
                assert out["output"].shape == (8,) and out["output"].dtype == np.float32
                np.testing.assert_allclose(out["output"], want[i], rtol=1e-5, atol=1e-5)

        async with SidecarClient(server.address) as client:
            info = await client.model_info()
            assert info.backend == "torch"
            assert [(s.name, s.dtype, list(s.shape)) for s in info.inputs] == [("input", "float32", [16])]
            assert [(s.name, s.dtype, list(s.shape)) for s in info.outputs] == [("output", "float32", [8])]
        await asyncio.wait_for(asyncio.gather(*(one_stream(s) for s in range(STREAMS))), timeout=60)
        (batch_size,) = [m for m in server.metric_registry.snapshot() if m.identifier.endswith("gpuSidecar.batchSize")]
        assert batch_size.sum == STREAMS * PER_STREAM
        assert 1 < batch_size.max <= 16, f"no batching under concurrent load, or too much: {batch_size}"


@pytest.mark.parametrize("options, instances", [("", 1), ("&threads=1", 2)], ids=["one", "two-single-threaded"])
def test_scripted_model_served_on_the_cpu_answers_each_request_with_its_own_output(tmp_path, options, instances):
    path = tmp_path / "model.pt"
    module = save_scripted(path)
    run(_serve_many(f"{path}?{SPEC}{options}", module, instances))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: unverified here")
def test_scripted_model_served_on_cuda_pipelined_answers_each_request_with_its_own_output(tmp_path):
    path = tmp_path / "model.pt"
    module = save_scripted(path)
    run(_serve_many(f"{path}?{SPEC}&device=cuda", module))
