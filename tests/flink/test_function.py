"""SidecarAsyncFunction (sidecar/flink/function.py) driven as PyFlink drives it, against a real server.

PyFlink unpickles the function with its retry strategy (one AsyncFunctionDescriptor),
calls open() with the subtask's runtime context, and runs async_invoke on a loop of
its own thread (AsyncFunctionRunner: loop.run_forever, records handed in with
run_coroutine_threadsafe). The metric group here is PyFlink's own GenericMetricGroup.
The server runs on another loop thread, as the sidecar would run beside the worker.
"""

from __future__ import annotations

import importlib.util

from tests.environment import need

need("flink", None if importlib.util.find_spec("pyflink") else "needs PyFlink: pip install 'apache-flink==2.3.0' -e '.[flink]'")

import asyncio  # noqa: E402
import concurrent.futures  # noqa: E402
import pickle  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import cloudpickle  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from pyflink.common import Time  # noqa: E402
from pyflink.datastream.functions import AsyncFunctionDescriptor  # noqa: E402
from pyflink.fn_execution.metrics.process.metric_impl import GenericMetricGroup  # noqa: E402

from sidecar.flink import (  # noqa: E402
    NumpyCodec,
    SidecarAsyncFunction,
    SidecarPermanentError,
    SidecarRetryableError,
)
from sidecar.flink.client_thread import STOP_GRACE_S  # noqa: E402
from tests.rpc.helpers import serving  # noqa: E402

X = np.arange(16, dtype=np.float32)
WAIT_S = 30.0


class LoopThread:
    """A thread running an event loop forever; coroutines go in with run_coroutine_threadsafe."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def submit(self, coro) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT_S)
        self.loop.close()


class Context:
    """What open() asks of PyFlink's RuntimeContext."""

    def __init__(self, task: str = "infer", index: int = 3) -> None:
        self.task, self.index = task, index
        self.metrics = GenericMetricGroup(None, None)

    def get_task_name(self) -> str:
        return self.task

    def get_index_of_this_subtask(self) -> int:
        return self.index

    def get_metrics_group(self) -> GenericMetricGroup:
        return self.metrics

    def gauges(self, group: str = "sidecar") -> dict[str, int]:
        return {name: read() for name, read in self.metrics.add_group(group)._flink_gauge.items()}


@pytest.fixture
def server() -> Iterator[str]:
    """A real sidecar on a unix socket, on a loop thread of its own; yields its address."""
    host = LoopThread("test-server")
    running = serving("unix", model_uri="mock:?base_ms=1&per_item_ms=0")
    address = host.submit(running.__aenter__()).result(WAIT_S).address
    try:
        yield address
    finally:
        host.submit(running.__aexit__(None, None, None)).result(WAIT_S)
        host.stop()


@pytest.fixture
def runner() -> Iterator[LoopThread]:
    """PyFlink's AsyncFunctionRunner, as it runs the records."""
    thread = LoopThread("async-function-runner")
    yield thread
    thread.stop()


def invoke(runner: LoopThread, fn: SidecarAsyncFunction, record) -> object:
    """async_invoke's result, or the error it raised."""
    try:
        return runner.submit(fn.async_invoke(record)).result(WAIT_S)
    except Exception as error:  # noqa: BLE001 - the test looks at what it was
        return error


def shipped(fn: SidecarAsyncFunction, **retry) -> AsyncFunctionDescriptor:
    """What a worker unpickles: the function and its retry strategy, pickled together."""
    descriptor = AsyncFunctionDescriptor(
        fn, Time.seconds(60), 100, fn.retry_strategy(**retry), AsyncFunctionDescriptor.OutputMode.UNORDERED
    )
    return pickle.loads(cloudpickle.dumps(descriptor))


def test_records_run_on_pyflinks_loop_thread_are_answered_through_the_codec_and_counted(server, runner):
    n = 20
    codec = NumpyCodec(select=lambda r: r["x"], emit=lambda r, out: (r["id"], out.tolist()))
    fn = shipped(SidecarAsyncFunction(server, codec, timeout_s=10, connect_timeout_s=10)).async_function
    context = Context()
    fn.open(context)
    try:
        assert [t for t in threading.enumerate() if t.name == "sidecar-client-infer-3"]
        futures = [runner.submit(fn.async_invoke({"id": i, "x": (X + i).tolist()})) for i in range(n)]
        results = [f.result(WAIT_S) for f in futures]
    finally:
        fn.close()
    assert results == [[(i, ((X + i) * 2).tolist())] for i in range(n)]
    gauges = context.gauges()
    assert gauges["requests"] == gauges["succeeded"] == n
    assert gauges["permanentErrors"] == gauges["retryableErrors"] == gauges["inflight"] == 0
    assert 0 < gauges["latencyP50Us"] <= gauges["latencyMaxUs"]
    assert not [t for t in threading.enumerate() if t.name == "sidecar-client-infer-3"]


def test_the_unpickled_strategy_counts_retries_into_the_unpickled_functions_gauges(server):
    descriptor = shipped(SidecarAsyncFunction(server, connect_timeout_s=10), initial_delay_ms=1, max_delay_ms=4)
    fn, strategy = descriptor.async_function, descriptor.async_retry_strategy
    context = Context()
    fn.open(context)
    try:
        assert strategy.get_retry_predicate().exception_predicate()(SidecarRetryableError("UNAVAILABLE", "x"))
        strategy.get_backoff_time_millis(1)
        strategy.get_backoff_time_millis(2)
        assert fn.stats.retries == 2 and context.gauges()["retries"] == 2
    finally:
        fn.close()


def test_a_record_the_codec_cannot_encode_fails_invalid_argument_and_is_never_sent(server, runner):
    fn = SidecarAsyncFunction(server, connect_timeout_s=10)
    context = Context()
    fn.open(context)
    try:
        ragged = invoke(runner, fn, [[1.0, 2.0], [3.0]])
        good = invoke(runner, fn, X.tolist())
    finally:
        fn.close()
    assert isinstance(ragged, SidecarPermanentError) and ragged.code == "INVALID_ARGUMENT", ragged
    assert isinstance(ragged.__cause__, ValueError)
    assert good == [(X * 2).tolist()]
    assert context.gauges()["requests"] == 1  # the ragged one never reached the client


def test_a_wrong_shape_is_the_sidecars_to_refuse_permanently(server, runner):
    fn = SidecarAsyncFunction(server, connect_timeout_s=10)
    context = Context()
    fn.open(context)
    try:
        refused = invoke(runner, fn, [1.0, 2.0, 3.0])
    finally:
        fn.close()
    assert isinstance(refused, SidecarPermanentError) and refused.code == "INVALID_ARGUMENT", refused
    assert context.gauges()["permanentErrors"] == 1


def test_after_close_a_record_raises_and_the_client_thread_is_gone(server, runner):
    fn = SidecarAsyncFunction(server, connect_timeout_s=10, close_timeout_s=1.0)
    fn.open(Context(task="closing", index=0))
    assert invoke(runner, fn, X.tolist()) == [(X * 2).tolist()]
    began = time.monotonic()
    fn.close()
    assert time.monotonic() - began < 1.0 + STOP_GRACE_S
    assert not [t for t in threading.enumerate() if t.name == "sidecar-client-closing-0"]
    assert isinstance(invoke(runner, fn, X.tolist()), RuntimeError)
    fn.close()  # twice is fine


def test_a_function_pickled_after_open_arrives_unopened(server, runner):
    fn = SidecarAsyncFunction(server, connect_timeout_s=10)
    fn.open(Context())
    try:
        copy = pickle.loads(cloudpickle.dumps(fn))
    finally:
        fn.close()
    assert copy.stats is None and copy.target == server
    assert isinstance(invoke(runner, copy, X.tolist()), RuntimeError)


def test_open_with_no_sidecar_within_connect_timeout_raises_retryable():
    socket_dir = tempfile.mkdtemp(prefix="gs-", dir="/tmp")
    try:
        fn = SidecarAsyncFunction(f"unix://{socket_dir}/nobody.sock", connect_timeout_s=0.5)
        began = time.monotonic()
        with pytest.raises(SidecarRetryableError) as raised:
            fn.open(Context(task="absent", index=1))
        took = time.monotonic() - began
        fn.close()
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
    assert raised.value.code == "UNAVAILABLE"
    assert 0.5 <= took < 0.5 + STOP_GRACE_S, took
    assert not [t for t in threading.enumerate() if t.name == "sidecar-client-absent-1"]


def test_open_without_a_metric_group_still_serves(server, runner):
    context = Context()
    context.metrics = None  # the job turned Python metrics off
    fn = SidecarAsyncFunction(server, connect_timeout_s=10)
    fn.open(context)
    try:
        assert invoke(runner, fn, X.tolist()) == [(X * 2).tolist()]
    finally:
        fn.close()
    assert fn.stats is not None and fn.stats.succeeded == 1


@pytest.mark.parametrize("bad", [dict(timeout_s=0), dict(connect_timeout_s=0), dict(close_timeout_s=-1)])
def test_nonsense_timeouts_are_refused(bad):
    with pytest.raises(ValueError):
        SidecarAsyncFunction("127.0.0.1:1", **bad)


def test_each_subtask_reconnects_on_its_own_random_schedule(server):
    # Every subtask unpickles the same random state; open() gives each a fresh one,
    # so subtasks that lost the same sidecar do not all come back at the same moments.
    fn = SidecarAsyncFunction(server, timeout_s=10, connect_timeout_s=10)
    copies = [shipped(fn).async_function for _ in range(2)]
    for index, copy in enumerate(copies):
        copy.open(Context(index=index))
    try:
        schedules = [[copy._client.reconnect.delay_s(n) for n in range(1, 6)] for copy in copies]
    finally:
        for copy in copies:
            copy.close()
    assert schedules[0] != schedules[1]
