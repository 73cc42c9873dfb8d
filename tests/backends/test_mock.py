"""The mock backend: options from the URI, the latency model, and injected faults."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from sidecar.backends.base import BackendError
from sidecar.backends.mock import MockBackend
from sidecar.core.tensors import TensorSpec


class RecordingSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def batch(n: int, dim: int = 16) -> dict[str, np.ndarray]:
    return {"input": np.arange(n * dim, dtype=np.float32).reshape(n, dim)}


def loaded(uri: str) -> tuple[MockBackend, RecordingSleep]:
    sleep = RecordingSleep()
    backend = MockBackend(uri, sleep=sleep)
    backend.load()
    return backend, sleep


def test_defaults_describe_one_float32_input_and_output_of_width_16():
    info = MockBackend("mock:", sleep=RecordingSleep()).load()
    assert info.spec.inputs == (TensorSpec("input", "float32", (16,)),)
    assert info.spec.outputs == (TensorSpec("output", "float32", (16,)),)
    assert info.max_batch_size is None


def test_dim_and_max_batch_come_from_the_uri():
    info = MockBackend("mock:?dim=3&max_batch=8").load()
    assert info.spec.inputs[0].shape == (3,) and info.spec.outputs[0].shape == (3,)
    assert info.max_batch_size == 8


def test_empty_uri_means_defaults():
    assert MockBackend("").options.dim == 16


def test_output_is_input_times_two_in_float32():
    backend, _ = loaded("mock:?dim=4&base_ms=0&per_item_ms=0")
    x = batch(3, 4)
    out = backend.infer(x)["output"]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x["input"] * 2)


def test_latency_is_base_plus_per_item_times_batch_size():
    backend, sleep = loaded("mock:?base_ms=2&per_item_ms=0.5")
    backend.infer(batch(1))
    backend.infer(batch(10))
    assert sleep.calls == pytest.approx([0.0025, 0.007])


def test_default_latency_is_2ms_plus_20us_per_item():
    backend, sleep = loaded("mock:")
    backend.infer(batch(100))
    assert sleep.calls == pytest.approx([0.004])


def test_load_sleeps_for_load_ms_only_when_asked():
    _, sleep = loaded("mock:?load_ms=250")
    assert sleep.calls == pytest.approx([0.25])
    _, sleep = loaded("mock:")
    assert sleep.calls == []


def test_counts_batches():
    backend, _ = loaded("mock:")
    for _ in range(3):
        backend.infer(batch(2))
    assert backend.batches == 3


def test_fails_only_the_chosen_batch():
    backend, _ = loaded("mock:?fail_on_batch=2")
    backend.infer(batch(1))
    with pytest.raises(BackendError, match="mock fault injected on batch 2"):
        backend.infer(batch(1))
    assert backend.infer(batch(1))["output"].shape == (1, 16)


def test_returns_one_row_too_few_on_the_chosen_batch():
    backend, _ = loaded("mock:?wrong_count_on_batch=1")
    assert backend.infer(batch(5))["output"].shape == (4, 16)
    assert backend.infer(batch(5))["output"].shape == (5, 16)


def test_hung_batch_blocks_until_close_then_fails():
    backend, _ = loaded("mock:?hang_on_batch=2")
    backend.infer(batch(1))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            backend.infer(batch(1))
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            errors.append(e)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=0.05)
    assert worker.is_alive(), "the hung batch returned before close()"
    backend.close()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], BackendError)
    assert "batch 2" in str(errors[0])


@pytest.mark.parametrize(
    "uri, words",
    [
        ("mock:?colour=red", ["unknown option 'colour'", "'red'", "base_ms", "dim", "fail_on_batch"]),
        ("mock:?dim=0", ["dim=", "'0'", "integer >= 1"]),
        ("mock:?dim=", ["dim=", "''", "integer >= 1"]),
        ("mock:?dim=2.5", ["dim=", "'2.5'", "integer >= 1"]),
        ("mock:?base_ms=-1", ["base_ms=", "'-1'", "number >= 0"]),
        ("mock:?per_item_ms=nan", ["per_item_ms=", "'nan'", "number >= 0"]),
        ("mock:?fail_on_batch=zero", ["fail_on_batch=", "'zero'", "integer >= 1"]),
        ("cpu:?dim=4", ["should look like 'mock:"]),
    ],
)
def test_bad_options_are_rejected_at_construction_with_the_option_value_and_what_is_allowed(uri, words):
    with pytest.raises(BackendError) as err:
        MockBackend(uri)
    for word in words:
        assert word in str(err.value)


def test_fails_every_nth_batch():
    backend, _ = loaded("mock:?fail_every=3")
    outcomes = []
    for _ in range(7):
        try:
            backend.infer(batch(1))
            outcomes.append("ok")
        except BackendError:
            outcomes.append("fail")
    assert outcomes == ["ok", "ok", "fail", "ok", "ok", "fail", "ok"]


def test_stalls_every_nth_batch_for_stall_ms_on_top_of_its_latency():
    backend, sleep = loaded("mock:?stall_every=2&stall_ms=500&base_ms=1&per_item_ms=0")
    for _ in range(4):
        backend.infer(batch(1))
    assert sleep.calls == pytest.approx([0.001, 0.5, 0.001, 0.001, 0.5, 0.001])


def test_hangs_every_nth_batch_until_close():
    backend, _ = loaded("mock:?hang_every=2")
    backend.infer(batch(1))
    backend.close()  # closed first: the hung call returns at once, failing
    with pytest.raises(BackendError, match="hung until the backend was closed"):
        backend.infer(batch(1))


def test_leak_bytes_keeps_one_allocation_per_batch():
    backend, _ = loaded("mock:?leak_bytes=1000")
    for _ in range(5):
        backend.infer(batch(1))
    assert len(backend._kept) == 5 and all(len(b) == 1000 for b in backend._kept)
