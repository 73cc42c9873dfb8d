"""Triton's own Python client (tritonclient, gRPC and HTTP) against a real server.

The server runs on a thread of its own (tests/kserve/helpers.py); the blocking
clients run on the test's thread, every call bounded by WAIT_S. The model is the
mock backend's: input "input" FP32 [N, 16], output "output" = input * 2.
"""

from __future__ import annotations

import functools
import queue
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from tests.environment import need


def _missing() -> str | None:
    try:
        import tritonclient.grpc
        import tritonclient.http  # noqa: F401 - only to see that it imports
    except Exception as e:  # noqa: BLE001 - ImportError, or protobuf's VersionError under protobuf < 6
        return (f"tritonclient[grpc,http] is not installed ({type(e).__name__}: {e}) "
                "(the kserve-test extra; CI's kserve environment has it)")
    return None


need("tritonclient", _missing())

import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from tests.kserve.helpers import server_thread
from tests.rpc.helpers import WAIT_S, settled_counts

MODEL = "model"
MAX_BATCH = 8
# One batch of one at a time, 300 ms each, and room for one more in the queue.
SLOW = {"max_queue_length": 1, "max_batch_size": 1, "max_inflight_batches": 1,
        "model_uri": "mock:?base_ms=300&per_item_ms=0"}


class Triton:
    """One tritonclient client, gRPC or HTTP. gRPC calls carry client_timeout and
    answer as JSON (like HTTP's); HTTP calls are bounded by the network timeout."""

    def __init__(self, protocol: str, server: Any, concurrency: int = 1) -> None:
        self.protocol = protocol
        if protocol == "grpc":
            self.lib: Any = tgrpc
            self.client: Any = tgrpc.InferenceServerClient(server.address)
            self.bound: dict[str, Any] = {"client_timeout": WAIT_S}
        else:
            self.lib = thttp
            self.client = thttp.InferenceServerClient(
                f"127.0.0.1:{server.kserve_http_port}", concurrency=concurrency,
                connection_timeout=WAIT_S, network_timeout=WAIT_S,
            )
            self.bound = {}
        self.answers: queue.Queue[tuple[Any, Any]] | None = None
        self.closed = False

    def stream(self) -> queue.Queue[tuple[Any, Any]]:
        """Opens the gRPC stream; its callback's (result, error) pairs arrive in the queue."""
        self.answers = queue.Queue()
        put = self.answers.put
        self.client.start_stream(callback=lambda result, error: put((result, error)), stream_timeout=WAIT_S)
        return self.answers

    def ask(self, method: str, *args: Any) -> Any:
        extra = {**self.bound, "as_json": True} if self.protocol == "grpc" and method.startswith("get_") else self.bound
        return getattr(self.client, method)(*args, **extra)

    def inputs(self, x: np.ndarray, datatype: str = "FP32", name: str = "input", binary: bool = True) -> list[Any]:
        tensor = self.lib.InferInput(name, list(x.shape), datatype)
        if self.protocol == "http":
            tensor.set_data_from_numpy(x, binary_data=binary)
        else:
            tensor.set_data_from_numpy(x)
        return [tensor]

    def infer(self, x: np.ndarray, binary_in: bool = True, binary_out: bool = True, **tensor: Any) -> Any:
        outputs = [thttp.InferRequestedOutput("output", binary_data=binary_out)] if self.protocol == "http" else None
        return self.client.infer(MODEL, self.inputs(x, binary=binary_in, **tensor), outputs=outputs, **self.bound)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.answers is not None:
                self.client.stop_stream()  # waits for the server to end the stream (bounded by stream_timeout)
            self.client.close()


def batch(n: int, start: float = 0.0) -> np.ndarray:
    return (np.arange(n * 16, dtype=np.float32) + start).reshape(n, 16)


def as_ints(values: list[Any]) -> list[int]:
    return [int(v) for v in values]  # gRPC's JSON writes int64 as strings


def error_of(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Any, Any]]:
    with server_thread(max_batch_size=MAX_BATCH) as (server, runner):
        yield server, runner


@pytest.fixture
def connect() -> Iterator[Callable[..., Triton]]:
    """Makes clients (protocol, server, concurrency); closes them after the test."""
    made: list[Triton] = []

    def make(*args: Any, **kwargs: Any) -> Triton:
        made.append(Triton(*args, **kwargs))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture(params=["grpc", "http"])
def triton(request: pytest.FixtureRequest, served: tuple[Any, Any], connect: Callable[..., Triton]) -> Triton:
    return connect(request.param, served[0])


def test_reports_live_ready_and_the_model_metadata(triton: Triton) -> None:
    assert triton.ask("is_server_live") and triton.ask("is_server_ready")
    assert triton.ask("is_model_ready", MODEL)
    assert not triton.ask("is_model_ready", "no-such-model")
    server = triton.ask("get_server_metadata")
    assert server["name"] == "gpu-sidecar" and "statistics" in server["extensions"]
    meta = triton.ask("get_model_metadata", MODEL)
    assert meta["name"] == MODEL and meta["versions"] == ["1"]
    for tensors, name in ((meta["inputs"], "input"), (meta["outputs"], "output")):
        assert [(t["name"], t["datatype"], as_ints(t["shape"])) for t in tensors] == [(name, "FP32", [-1, 16])]


def test_model_config_reports_the_configured_max_batch_size(triton: Triton) -> None:
    config = triton.ask("get_model_config", MODEL)
    config = config["config"] if triton.protocol == "grpc" else config  # gRPC wraps it in ModelConfigResponse
    assert int(config["max_batch_size"]) == MAX_BATCH
    for tensors, name in ((config["input"], "input"), (config["output"], "output")):
        assert [(t["name"], t["data_type"], as_ints(t["dims"])) for t in tensors] == [(name, "TYPE_FP32", [16])]


def test_statistics_count_the_items_inferred(triton: Triton) -> None:
    def stats() -> dict[str, Any]:
        (model,) = triton.ask("get_inference_statistics", MODEL)["model_stats"]
        assert model["name"] == MODEL and model["version"] == "1"
        return model

    before = int(stats().get("inference_count", 0))
    triton.infer(batch(3))
    deadline = time.monotonic() + WAIT_S
    while int((after := stats()).get("inference_count", 0)) < before + 3:  # metrics arrive after the answer
        assert time.monotonic() < deadline, f"inference_count stayed {after.get('inference_count')}, from {before}"
        time.sleep(0.01)
    assert int(after["execution_count"]) >= 1
    assert int(after["inference_stats"]["success"]["count"]) >= before + 3


@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize(
    ("protocol", "binary_in", "binary_out"),  # HTTP: tensors as binary data (the default) or JSON, each way
    [("grpc", True, True), ("http", True, True), ("http", False, False), ("http", True, False), ("http", False, True)],
)
def test_infer_answers_input_times_two(
    served: tuple[Any, Any], connect: Callable[..., Triton], n: int, protocol: str, binary_in: bool, binary_out: bool
) -> None:
    x = batch(n, start=-n)
    result = connect(protocol, served[0]).infer(x, binary_in=binary_in, binary_out=binary_out)
    np.testing.assert_array_equal(result.as_numpy("output"), x * 2)
    if protocol == "http":
        (output,) = result.get_response()["outputs"]
        assert output["shape"] == [n, 16] and output["datatype"] == "FP32"
        assert ("binary_data_size" in output.get("parameters", {})) is binary_out
        assert ("data" in output) is not binary_out
    else:
        assert result.get_response().model_name == MODEL


BAD_INPUTS = {
    "wrong shape": ({"x": np.ones((1, 8), np.float32)}, "shape [1, 8] is not [N, 16]"),
    "wrong datatype": ({"x": np.ones((1, 16), np.int32), "datatype": "INT32"}, "INT32 does not match the model's FP32"),
    "unknown name": ({"x": np.ones((1, 16), np.float32), "name": "pixels"}, "unknown input name(s) ['pixels']"),
}


@pytest.mark.parametrize("bad", list(BAD_INPUTS))
def test_bad_input_is_refused_saying_why_and_the_next_request_is_served(triton: Triton, bad: str) -> None:
    tensor, says = BAD_INPUTS[bad]
    e = error_of(lambda: triton.infer(**tensor))
    assert says in e.message(), e.message()
    assert e.status() == ("StatusCode.INVALID_ARGUMENT" if triton.protocol == "grpc" else "400")
    x = batch(2)
    np.testing.assert_array_equal(triton.infer(x).as_numpy("output"), x * 2)


def stream_round(client: Triton, requests: dict[str, np.ndarray]) -> dict[str, Any]:
    """Sends every request on the open stream, then takes one answer per request:
    results by id, and errors by the id their message names."""
    assert client.answers is not None
    for request_id, x in requests.items():
        client.client.async_stream_infer(MODEL, client.inputs(x), request_id=request_id)
    got: dict[str, Any] = {}
    for _ in requests:
        result, error = client.answers.get(timeout=WAIT_S)
        if error is None:
            key = result.get_response().id
        else:  # a stream's error carries no id but its message names the request
            key = next((i for i in requests if f"request {i!r}" in error.message()), f"? {error.message()}")
        assert key not in got, f"request {key} answered twice"
        got[key] = result if error is None else error
    return got


def test_grpc_stream_answers_requests_in_flight_and_a_bad_one_among_them(
    served: tuple[Any, Any], connect: Callable[..., Triton]
) -> None:
    client = connect("grpc", served[0])
    answers = client.stream()
    requests = {f"r{i}": batch(1 + i % 3, start=100 * i) for i in range(20)}
    requests["r10"] = np.ones((1, 8), np.float32)
    got = stream_round(client, requests)
    assert sorted(got) == sorted(requests)
    assert isinstance(got["r10"], InferenceServerException)
    assert "INVALID_ARGUMENT" in got["r10"].message() and "shape [1, 8]" in got["r10"].message()
    for request_id, x in requests.items():
        if request_id != "r10":
            np.testing.assert_array_equal(got[request_id].as_numpy("output"), x * 2)
    later = {f"after{i}": batch(2, start=-i) for i in range(3)}  # the stream is still usable
    for request_id, result in stream_round(client, later).items():
        np.testing.assert_array_equal(result.as_numpy("output"), later[request_id] * 2)
    client.close()  # the stream ends: every answer the server sent has been called back
    assert answers.empty(), f"answers beyond one per request: {answers.get_nowait()}"


def overload(client: Triton, n: int) -> dict[str, Any]:
    """n requests at once, each answered by id: its result or its error."""
    x = batch(1, start=7)
    if client.protocol == "http":
        sent = {f"o{i}": client.client.async_infer(MODEL, client.inputs(x), request_id=f"o{i}") for i in range(n)}
        got: dict[str, Any] = {}
        for request_id, future in sent.items():
            try:
                got[request_id] = future.get_result(timeout=WAIT_S)
            except InferenceServerException as e:
                got[request_id] = e
        return got
    answers: queue.Queue[Any] = queue.Queue()

    def answered(request_id: str, result: Any, error: Any) -> None:
        answers.put((request_id, result if error is None else error))

    for i in range(n):
        client.client.async_infer(MODEL, client.inputs(x), functools.partial(answered, f"o{i}"),
                                  request_id=f"o{i}", client_timeout=WAIT_S)
    got = {}
    for _ in range(n):
        request_id, answer = answers.get(timeout=WAIT_S)
        assert request_id not in got, f"{request_id} answered twice"
        got[request_id] = answer
    return got


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_overload_is_refused_queue_full_and_the_rest_are_served(connect: Callable[..., Triton], protocol: str) -> None:
    n = 8
    with server_thread(**SLOW) as (server, runner):
        got = overload(connect(protocol, server, concurrency=n), n)
        counts = runner.call(settled_counts(server))
    assert sorted(got) == sorted(f"o{i}" for i in range(n))
    refused = [e for e in got.values() if isinstance(e, InferenceServerException)]
    served = [r for r in got.values() if not isinstance(r, InferenceServerException)]
    assert refused and served, f"{len(refused)} refused, {len(served)} served: the overload did not overload"
    full = "StatusCode.RESOURCE_EXHAUSTED" if protocol == "grpc" else "503"
    for e in refused:
        assert e.status() == full, (e.status(), e.message())
        assert "queue is full" in e.message(), e.message()
    for r in served:
        np.testing.assert_array_equal(r.as_numpy("output"), batch(1, start=7) * 2)
    assert counts["outcomes"] == {"received": n, "succeeded": len(served), "rejected": len(refused)}
    assert counts["kserve"][protocol] == {"requests": n, "failed": len(refused)}


def test_server_counts_reconcile_with_what_the_clients_sent(connect: Callable[..., Triton]) -> None:
    sent: Counter[str] = Counter()
    with server_thread(max_batch_size=MAX_BATCH) as (server, runner):
        for protocol in ("grpc", "http"):
            client = connect(protocol, server)
            for n in (1, 5, 3):
                client.infer(batch(n))
                sent.update({f"{protocol} requests": 1, "items": n, "succeeded": n})
            error_of(lambda c=client: c.infer(np.ones((1, 8), np.float32)))
            sent.update({f"{protocol} requests": 1, f"{protocol} failed": 1, "items": 1, "invalid": 1})
        streaming = connect("grpc", server)
        streaming.stream()
        requests = {f"s{i}": batch(1 + i % 4) for i in range(12)}
        requests["s5"] = np.ones((2, 15), np.float32)
        stream_round(streaming, requests)
        streaming.close()
        good = sum(len(x) for k, x in requests.items() if k != "s5")
        sent.update({"grpc requests": 12, "grpc failed": 1, "items": good + 1, "succeeded": good, "invalid": 1})
        counts = runner.call(settled_counts(server))
        (stats,) = client.ask("get_inference_statistics", MODEL)["model_stats"]
    # A refused request counts as one item received: its items are never known.
    assert counts["outcomes"] == {"received": sent["items"], "succeeded": sent["succeeded"], "invalid": sent["invalid"]}
    for p in ("grpc", "http"):
        assert counts["kserve"][p] == {"requests": sent[f"{p} requests"], "failed": sent[f"{p} failed"]}
    assert int(stats["inference_count"]) == sent["succeeded"]
    assert int(stats["inference_stats"]["fail"]["count"]) == sent["invalid"]
