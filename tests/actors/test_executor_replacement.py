"""Real actors on a fake clock: a hung executor is replaced, a failed load is retried
when (and only when) the clock reaches the core's backoff, and the replacement's
backend is made and loaded on its own executor thread."""

from __future__ import annotations

import queue
import threading
import time

from actors.messages import GetSnapshot
from sidecar.backends.base import BackendError
from sidecar.backends.mock import MockBackend
from sidecar.config import SidecarConfig
from sidecar.core.status import Code
from sidecar.metrics.group import root_group
from sidecar.metrics.registry import MetricRegistry
from sidecar.server.pipeline import start_pipeline
from tests.actors.test_batch_window import WAIT_S, send
from tests.fakes import FakeClock

QUICK = "mock:?base_ms=0&per_item_ms=0"


def wait_until(check, what: str) -> None:
    """Bounded wait for the actors to reach a state (each check is an ask: a barrier)."""
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def test_failed_reload_is_retried_exactly_when_the_clock_reaches_the_backoff():
    clock = FakeClock()
    config = SidecarConfig(max_batch_size=4, batch_timeout_s=0.0, max_inflight_batches=1, backend_timeout_s=1.0)
    hung = MockBackend(QUICK + "&hang_on_batch=1", sleep=lambda s: None)
    threads: list[str] = []

    def make_backend():
        threads.append(threading.current_thread().name)
        if len(threads) == 1:
            raise BackendError("CUDA out of memory")
        return MockBackend(QUICK, sleep=lambda s: None)

    delivered: queue.Queue = queue.Queue()
    ups: list[int] = []
    group = root_group(MetricRegistry(), "host", "tm").add_group("gpuSidecar")
    pipeline = start_pipeline(
        config, clock, [hung], lambda out, cancels: delivered.put(out), group,
        make_backend=make_backend, on_capacity=ups.append,
    )
    peers = pipeline.peers

    def batcher() -> dict:
        return peers.batcher.ask(GetSnapshot(), timeout=WAIT_S)

    try:
        send(clock, peers, [1])
        wait_until(lambda: batcher()["inflight_batches"] == (1,), "the batch to run (and hang)")
        clock.advance(1.0)  # the watchdog gives up on it; the replacement fails to load
        wait_until(lambda: batcher()["executor_phases"] == ("WAITING",), "the failed load")
        (answer,) = delivered.get(timeout=WAIT_S)[1]
        assert answer.answer.failure.code == Code.DEADLINE_EXCEEDED  # a core answer
        assert len(threads) == 1 and threads[0].startswith("ExecutorActor-")
        assert batcher()["stuck_hung"] == 1 and ups == [0]
        clock.advance(0.499)  # not yet: the backoff is 500 ms
        assert batcher()["executor_phases"] == ("WAITING",) and len(threads) == 1
        clock.advance(0.001)
        wait_until(lambda: batcher()["executor_phases"] == ("UP",), "the retried load")
        assert len(threads) == 2 and threads[1].startswith("ExecutorActor-") and threads[1] != threads[0]
        assert ups == [0, 1]
        send(clock, peers, [2])
        (answer,) = delivered.get(timeout=WAIT_S)[1]
        assert answer.answer.request_id == 2 and answer.answer.failure is None
    finally:
        hung.close()
        pipeline.stop()
