"""Real actors on a fake clock: the batch window fires when time is advanced, not otherwise.

Under sidecar.batch.dispatch=window (the rig's default here); eager-when-idle, the
sidecar's default, sends a partial batch to an idle executor without any clock
movement. The mock takes no time, so the executor is idle whenever a request comes.
"""

from __future__ import annotations

import math
import queue

import numpy as np
import pytest

from actors.messages import GetSnapshot, RequestsReceived, StreamInput
from sidecar.backends.mock import MockBackend
from sidecar.config import SidecarConfig
from sidecar.core.batcher import Dispatch
from sidecar.core.request import Arrival
from sidecar.metrics.group import root_group
from sidecar.metrics.registry import MetricRegistry
from sidecar.server.pipeline import start_pipeline
from tests.fakes import FakeClock

WAIT_S = 10.0  # bound on every wait for an actor's answer


def arrival(request_id: int) -> Arrival:
    """A request as the edge hands it to the session: checked, in core types."""
    return Arrival(request_id, (np.full(16, request_id, np.float32).tobytes(),))


@pytest.fixture
def rig(request):
    dispatch = getattr(request, "param", "window")
    clock = FakeClock()
    delivered: queue.Queue = queue.Queue()
    config = SidecarConfig(max_batch_size=4, batch_timeout_s=0.010, batch_dispatch=dispatch)
    backend = MockBackend("mock:?base_ms=0&per_item_ms=0", sleep=lambda s: None)
    group = root_group(MetricRegistry(), "host", "tm").add_group("gpuSidecar")
    pipeline = start_pipeline(config, clock, [backend], lambda out, cancels: delivered.put(out), group)
    yield clock, pipeline.peers, delivered
    pipeline.stop()


def batcher_state(peers):
    # An ask is processed after everything told before it: a barrier.
    return peers.batcher.ask(GetSnapshot(), timeout=WAIT_S)


def send(clock, peers, ids, stream=1):
    item = StreamInput(stream, [arrival(i) for i in ids], (), math.inf)
    peers.session.tell(RequestsReceived([item], clock.now()))
    # Barriers, in pipeline order: each ask is answered after what was told before it.
    for ref in (peers.session, peers.admission, peers.batcher):
        ref.ask(GetSnapshot(), timeout=WAIT_S)


def test_partial_batch_waits_until_clock_passes_window(rig):
    clock, peers, delivered = rig
    send(clock, peers, [1, 2])
    assert batcher_state(peers)["queue_depth"] == 2
    clock.advance(0.009)
    assert batcher_state(peers)["queue_depth"] == 2
    assert delivered.empty()

    clock.advance(0.001)
    out = delivered.get(timeout=WAIT_S)
    assert batcher_state(peers)["queue_depth"] == 0
    assert sorted(r.request_id for r, *_ in out[1]) == [1, 2]
    assert np.frombuffer(out[1][0].answer.outputs[0], np.float32)[0] in (2.0, 4.0)  # a core answer


def test_full_batch_goes_without_any_clock_movement(rig):
    clock, peers, delivered = rig
    send(clock, peers, [1, 2, 3, 4])
    out = delivered.get(timeout=WAIT_S)
    assert sorted(r.request_id for r, *_ in out[1]) == [1, 2, 3, 4]
    assert {outcome for *_, outcome in out[1]} == {"succeeded"}  # as counted, for a later correction


def test_window_counts_from_oldest_request_across_messages(rig):
    clock, peers, delivered = rig
    send(clock, peers, [1])
    clock.advance(0.006)
    send(clock, peers, [2], stream=2)
    clock.advance(0.003)
    assert batcher_state(peers)["queue_depth"] == 2 and delivered.empty()
    clock.advance(0.001)
    got = {}
    while sum(len(v) for v in got.values()) < 2:
        for stream, responses in delivered.get(timeout=WAIT_S).items():
            got.setdefault(stream, []).extend(r.request_id for r, *_ in responses)
    assert got == {1: [1], 2: [2]}


@pytest.mark.parametrize("rig", ["eager-when-idle"], indirect=True)
def test_eager_when_idle_sends_a_lone_request_without_any_clock_movement(rig):
    clock, peers, delivered = rig
    start = clock.now()
    send(clock, peers, [1])
    out = delivered.get(timeout=WAIT_S)
    assert [r.request_id for r, *_ in out[1]] == [1] and clock.now() == start
    assert batcher_state(peers)["queue_depth"] == 0


def test_the_sidecar_default_is_eager_when_idle():
    assert SidecarConfig().batch_limits().dispatch is Dispatch.EAGER_WHEN_IDLE
    assert SidecarConfig(batch_dispatch="window").batch_limits().dispatch is Dispatch.WINDOW
