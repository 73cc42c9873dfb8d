"""The backend registry: built-ins by name, extended through installed entry points."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sidecar.backends import registry
from sidecar.backends.base import BackendError
from sidecar.backends.cpu import CpuBackend
from sidecar.backends.mock import MockBackend
from sidecar.backends.registry import UnknownBackend
from sidecar.client import SidecarClient
from tests.rpc.helpers import run, serving

PLUGIN_MODULE = "gpu_sidecar_test_plugin"

PLUGIN_SOURCE = textwrap.dedent(
    """
    from sidecar.backends.base import Backend, BackendInfo
    from sidecar.core.tensors import ModelSpec, TensorSpec

    class EchoBackend(Backend):
        name = "echo"
        def load(self):
            spec = TensorSpec("input", "float32", (int(self.options.text("dim", "4")),))
            return BackendInfo(ModelSpec((spec,), (TensorSpec("output", "float32", spec.shape),)))
        def infer(self, inputs): return {"output": inputs["input"] + 1}

    class NotABackend:
        pass
    """
)


@pytest.fixture
def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Installs a real distribution (module + dist-info) on sys.path with the given entry points."""

    def install(entry_points: dict[str, str]) -> None:
        (tmp_path / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SOURCE)
        dist_info = tmp_path / "gpu_sidecar_test_plugin-1.0.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: gpu-sidecar-test-plugin\nVersion: 1.0\n")
        lines = [f"{name} = {value}" for name, value in entry_points.items()]
        (dist_info / "entry_points.txt").write_text("[gpu_sidecar.backends]\n" + "\n".join(lines) + "\n")
        monkeypatch.syspath_prepend(str(tmp_path))

    yield install
    sys.modules.pop(PLUGIN_MODULE, None)


def test_lists_the_built_ins_sorted():
    names = registry.available()
    assert names == sorted(names)
    assert {"cpu", "mock", "onnx", "torch", "tensorrt"} <= set(names)


def test_resolves_built_ins_to_their_classes():
    assert registry.backend_class("mock") is MockBackend
    assert registry.backend_class("cpu") is CpuBackend


def test_create_returns_an_unloaded_instance_for_the_uri():
    backend = registry.create("mock", "mock:?dim=3")
    assert isinstance(backend, MockBackend)
    assert backend.model_uri == "mock:?dim=3" and backend.batches == 0


def test_unknown_name_is_a_value_error_listing_what_is_available():
    with pytest.raises(UnknownBackend) as err:
        registry.create("nosuch", "model.plan")
    assert isinstance(err.value, ValueError)
    assert "'nosuch'" in str(err.value)
    assert "available: " + ", ".join(registry.available()) in str(err.value)


def test_built_ins_are_imported_only_when_asked_for():
    code = (
        "import sys; from sidecar.backends import registry; registry.available();"
        "print('sidecar.backends.mock' in sys.modules, 'sidecar.backends.cpu' in sys.modules,"
        " 'onnxruntime' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False", "False"]


def test_installed_entry_point_adds_a_backend(install_plugin):
    install_plugin({"echo": f"{PLUGIN_MODULE}:EchoBackend"})
    assert "echo" in registry.available()
    backend = registry.create("echo", "echo://model")
    assert type(backend).__name__ == "EchoBackend" and backend.model_uri == "echo://model"


def test_built_in_wins_over_an_entry_point_of_the_same_name(install_plugin):
    install_plugin({"mock": f"{PLUGIN_MODULE}:EchoBackend"})
    assert registry.available().count("mock") == 1
    assert registry.backend_class("mock") is MockBackend


def test_entry_point_that_is_not_a_backend_is_rejected(install_plugin):
    install_plugin({"odd": f"{PLUGIN_MODULE}:NotABackend"})
    with pytest.raises(BackendError, match="'odd'.*not a subclass of"):
        registry.backend_class("odd")


def test_entry_point_that_fails_to_import_names_its_target(install_plugin):
    install_plugin({"broken": "no_such_module_anywhere:Backend"})
    with pytest.raises(BackendError, match="no_such_module_anywhere:Backend.*failed to import"):
        registry.backend_class("broken")


def test_configured_options_reach_the_backend_over_the_uri_query():
    backend = registry.create("cpu", "cpu:?seed=3&threads=1", {"threads": "2", "extra": "x"})
    assert backend.options.backend == "cpu"
    assert dict(backend.options) == {"seed": "3", "threads": "2", "extra": "x"}
    assert backend.options.integer("threads", 0) == 2


def test_a_plugin_backend_serves_through_the_real_server_by_name(install_plugin):
    install_plugin({"echo": f"{PLUGIN_MODULE}:EchoBackend"})

    async def go():
        async with serving(backend="echo", model_uri="echo:?dim=3", max_batch_size=4) as server:
            async with SidecarClient(server.address) as client:
                outs = await asyncio.gather(*[client.submit({"input": np.full(3, i, np.float32)}) for i in range(10)])
        for i, out in enumerate(outs):
            np.testing.assert_array_equal(out["output"], np.full(3, i + 1, np.float32))

    run(go())
