"""The batcher state machine, driven with explicit events and times; no clock, no sleep."""

from __future__ import annotations

import pytest

from sidecar.core.batcher import (
    ArmTimer,
    Batcher,
    BatcherError,
    BatchLimits,
    CapacityChanged,
    DispatchBatch,
    Drain,
    Drained,
    ExecutorDown,
    ExecutorFree,
    ExecutorUp,
    FailRequests,
    QueueReleased,
    ReplaceExecutor,
    RequestsAdmitted,
    State,
    TimerFired,
    Withdraw,
)
from sidecar.core.status import Code
from tests.factories import admitted, request


def make(max_batch=4, window=0.010, executors=1, inflight=1) -> Batcher:
    return Batcher(BatchLimits(max_batch, window, executors, inflight))


def arrive(b: Batcher, ids, at: float, max_wait: float = 10.0, timeout=None):
    reqs = [request(i, at=at, timeout=timeout) for i in ids]
    return b.handle(RequestsAdmitted(admitted(reqs, at, max_wait)), at)


def dispatched(actions) -> list[list[int]]:
    return [[r.request_id for r in a.requests] for a in actions if isinstance(a, DispatchBatch)]


def failed(actions) -> dict[int, Code]:
    return {r.request_id: f.code for a in actions if isinstance(a, FailRequests) for r, f in a.failures}


def timers(actions) -> list[float | None]:
    return [a.at for a in actions if isinstance(a, ArmTimer)]


def test_full_batch_dispatches_at_once():
    b = make(max_batch=4)
    actions = arrive(b, [1, 2, 3, 4], at=0.0)
    assert dispatched(actions) == [[1, 2, 3, 4]]
    assert b.state is State.IDLE
    assert QueueReleased(((1, 4),)) in actions


def test_partial_batch_waits_for_window_and_arms_timer():
    b = make(max_batch=4, window=0.010)
    actions = arrive(b, [1, 2], at=1.0)
    assert dispatched(actions) == []
    assert timers(actions) == [pytest.approx(1.010)]
    assert b.state is State.COLLECTING
    assert b.queue_depth == 2


def test_partial_batch_does_not_dispatch_before_window_elapses():
    b = make(max_batch=4, window=0.010)
    arrive(b, [1, 2], at=1.0)
    assert dispatched(b.handle(TimerFired(1.009), 1.009)) == []
    assert b.state is State.COLLECTING


def test_flushes_partial_batch_when_window_elapses():
    b = make(max_batch=4, window=0.010)
    arrive(b, [1, 2], at=1.0)
    actions = b.handle(TimerFired(1.010), 1.010)
    assert dispatched(actions) == [[1, 2]]
    assert timers(actions) == [None]
    assert b.state is State.IDLE


def test_timer_that_fires_a_hair_early_still_counts_as_on_time():
    b = make(max_batch=4, window=0.010)
    arrive(b, [1], at=1.0)
    assert dispatched(b.handle(TimerFired(1.010), 1.0099999)) == [[1]]


def test_window_counts_from_oldest_queued_request():
    b = make(max_batch=4, window=0.010)
    arrive(b, [1], at=1.000)
    actions = arrive(b, [2], at=1.006)
    assert timers(actions) == []  # the deadline is still the oldest's
    assert dispatched(b.handle(TimerFired(1.010), 1.010)) == [[1, 2]]


def test_window_restarts_from_new_oldest_after_dispatch():
    b = make(max_batch=2, window=0.010, inflight=4)
    arrive(b, [1], at=1.000)
    actions = arrive(b, [2, 3], at=1.004)  # 1 and 2 fill a batch; 3 is left
    assert dispatched(actions) == [[1, 2]]
    assert timers(actions) == [pytest.approx(1.014)]
    assert dispatched(b.handle(TimerFired(1.010), 1.010)) == []
    assert dispatched(b.handle(TimerFired(1.014), 1.014)) == [[3]]


def test_never_dispatches_more_than_max_batch_size():
    b = make(max_batch=3, inflight=10)
    actions = arrive(b, range(10), at=0.0)
    assert dispatched(actions) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert b.queue_depth == 1


def test_waits_for_free_executor_then_sends_what_is_ready():
    b = make(max_batch=2, window=0.010, inflight=1)
    assert dispatched(arrive(b, [1, 2], at=0.0)) == [[1, 2]]
    actions = arrive(b, [3, 4, 5], at=0.001)
    assert dispatched(actions) == []  # executor busy
    actions = b.handle(ExecutorFree(0, 0, 0.002), 0.003)
    assert dispatched(actions) == [[3, 4]]


def test_busy_executors_leave_timer_on_earliest_expiry_only():
    b = make(max_batch=2, window=0.010, inflight=1)
    arrive(b, [1, 2], at=0.0)
    actions = arrive(b, [3], at=0.001, max_wait=0.5)
    assert timers(actions) == [pytest.approx(0.501)]


def test_spreads_batches_over_least_loaded_executor():
    b = make(max_batch=1, executors=3, inflight=2)
    actions = arrive(b, range(4), at=0.0)
    assert [a.executor for a in actions if isinstance(a, DispatchBatch)] == [0, 1, 2, 0]
    assert b.inflight_batches == (2, 1, 1)


def test_expired_request_is_failed_never_dispatched():
    b = make(max_batch=4, window=0.010, inflight=1)
    arrive(b, [1, 2, 3, 4], at=0.0)  # occupies the only executor
    arrive(b, [5], at=0.001, max_wait=0.005)
    actions = b.handle(TimerFired(0.006), 0.006)
    assert failed(actions) == {5: Code.DEADLINE_EXCEEDED}
    assert "max queue wait of 5.0 ms" in actions[0].failures[0][1].message
    assert dispatched(b.handle(ExecutorFree(0, 0, 0.001), 0.007)) == []


def test_request_timeout_shorter_than_queue_wait_sets_its_expiry():
    b = make(max_batch=4, window=0.010, inflight=1)
    arrive(b, [1, 2, 3, 4], at=0.0)
    actions = arrive(b, [5], at=0.0, max_wait=1.0, timeout=0.003)
    assert timers(actions) == [pytest.approx(0.003)]
    actions = b.handle(TimerFired(0.003), 0.003)
    (r, failure), = actions[0].failures
    assert failure.code is Code.DEADLINE_EXCEEDED and "timeout of 3.0 ms" in failure.message


def test_dispatches_early_when_window_would_miss_a_deadline():
    b = make(max_batch=8, window=0.010, inflight=2)
    arrive(b, [1, 2, 3, 4, 5, 6, 7, 8], at=0.0)
    b.handle(ExecutorFree(0, 0, 0.001), 0.004)  # the estimate is the first sample: 1 ms
    actions = arrive(b, [9], at=0.005, timeout=0.003)
    # deadline 8 ms minus 1 ms estimate comes before the window end at 15 ms
    assert timers(actions) == [pytest.approx(0.008 - b.compute_estimate_s)]
    due = 0.008 - b.compute_estimate_s
    assert dispatched(b.handle(TimerFired(due), due)) == [[9]]


def test_withdrawn_requests_are_cancelled_and_leave_queue():
    b = make(max_batch=4)
    arrive(b, [1, 2, 3], at=0.0)
    actions = b.handle(Withdraw(frozenset({(1, 2), (1, 99)}), "stream closed"), 0.001)
    assert failed(actions) == {2: Code.CANCELLED}
    assert b.queue_depth == 2
    assert dispatched(b.handle(TimerFired(0.010), 0.010)) == [[1, 3]]


def test_drain_flushes_everything_without_waiting_for_window():
    b = make(max_batch=2, window=10.0, inflight=1)
    arrive(b, [1, 2, 3], at=0.0)  # [1,2] out, 3 waits
    actions = b.handle(Drain(), 0.001)
    assert dispatched(actions) == []  # executor still busy
    assert b.state is State.DRAINING
    actions = b.handle(ExecutorFree(0, 0, 0.001), 0.002)
    assert dispatched(actions) == [[3]]
    assert b.state is State.DRAINING
    actions = b.handle(ExecutorFree(0, 0, 0.001), 0.003)
    assert Drained() in actions
    assert b.state is State.CLOSED


def test_drain_when_idle_closes_at_once():
    b = make()
    assert Drained() in b.handle(Drain(), 0.0)
    assert b.state is State.CLOSED


def test_requests_after_close_are_refused_unavailable():
    b = make()
    b.handle(Drain(), 0.0)
    actions = arrive(b, [1], at=0.1)
    assert failed(actions) == {1: Code.UNAVAILABLE}
    assert b.state is State.CLOSED


def test_duplicate_key_in_queue_is_refused_and_original_kept():
    b = make(max_batch=4)
    arrive(b, [1], at=0.0)
    actions = arrive(b, [1], at=0.001)
    assert failed(actions) == {1: Code.INVALID_ARGUMENT}
    assert b.queue_depth == 1


def test_executor_free_without_batch_in_flight_is_illegal_and_changes_nothing():
    b = make(max_batch=4)
    arrive(b, [1], at=0.0)
    with pytest.raises(BatcherError):
        b.handle(ExecutorFree(0, 0, 0.001), 0.001)
    with pytest.raises(BatcherError):
        b.handle(ExecutorFree(7, 0, 0.001), 0.001)
    assert b.state is State.COLLECTING and b.queue_depth == 1 and b.inflight_batches == (0,)


def test_rejects_nonsense_limits():
    with pytest.raises(ValueError):
        make(max_batch=0)


# ---- fairness --------------------------------------------------------------------------


def test_fills_batches_one_request_per_stream_in_turn():
    b = make(max_batch=4, window=0.0, inflight=1)
    hot = [request(i, stream=1) for i in range(10)]
    cold = [request(100 + i, stream=2) for i in range(2)]
    actions = b.handle(RequestsAdmitted(admitted(hot + cold, 0.0)), 0.0)
    assert dispatched(actions) == [[0, 100, 1, 101]]
    assert dispatched(b.handle(ExecutorFree(0, 0, 0.001), 0.001)) == [[2, 3, 4, 5]]


def test_next_batch_starts_with_the_stream_after_the_last_served():
    b = make(max_batch=3, window=0.0, inflight=1)
    reqs = [request(s * 100 + i, stream=s) for i in range(4) for s in (1, 2, 3)]
    actions = b.handle(RequestsAdmitted(admitted(reqs, 0.0)), 0.0)
    assert dispatched(actions) == [[100, 200, 300]]
    b.handle(Withdraw(frozenset({(1, 101)}), "cancelled"), 0.0)
    assert dispatched(b.handle(ExecutorFree(0, 0, 0.001), 0.001)) == [[102, 201, 301]]


# ---- deadlines ---------------------------------------------------------------------------


def test_urgent_request_jumps_the_queue_when_its_deadline_nears():
    b = make(max_batch=4, window=0.010, inflight=2)
    arrive(b, [1, 2, 3, 4], at=0.0)  # a full batch at once: the executor learns the compute time
    b.handle(ExecutorFree(0, 0, 0.001), 0.005)  # estimate: 1 ms
    b.handle(RequestsAdmitted(admitted([request(5, at=0.005)], 0.005)), 0.005)
    actions = b.handle(RequestsAdmitted(admitted([request(6, at=0.006, timeout=0.004)], 0.006)), 0.006)
    due = 0.010 - b.compute_estimate_s  # before the window ends at 15 ms
    assert timers(actions) == [pytest.approx(due)]
    assert dispatched(b.handle(TimerFired(due), due)) == [[6, 5]]  # the urgent one first


def test_request_that_cannot_finish_in_time_fails_before_wasting_compute():
    b = make(max_batch=4, window=0.010, inflight=1)
    arrive(b, [1, 2, 3, 4], at=0.0)
    b.handle(ExecutorFree(0, 0, 0.002), 0.010)  # estimate 2 ms; executor now idle
    arrive(b, [5, 6, 7, 8], at=0.011)  # busy again
    actions = b.handle(RequestsAdmitted(admitted([request(9, at=0.012, timeout=0.005)], 0.012)), 0.012)
    due = 0.017 - b.compute_estimate_s
    assert timers(actions) == [pytest.approx(due)]
    actions = b.handle(TimerFired(due), due)
    (r, failure), = actions[0].failures
    assert r.request_id == 9 and failure.code is Code.DEADLINE_EXCEEDED
    assert "can no longer finish by its deadline" in failure.message and "2.0 ms" in failure.message


# ---- executors hang, die and come back -------------------------------------------------


def hung_rig():
    b = Batcher(BatchLimits(2, 0.0, executors=1, max_inflight_per_executor=2, backend_timeout_s=1.0))
    arrive(b, [1, 2, 3, 4], at=0.0)  # [1,2] runs, [3,4] waits behind it
    return b


def test_hung_backend_fails_its_batch_requeues_the_rest_and_asks_for_a_replacement():
    b = hung_rig()
    assert b.next_deadline() == pytest.approx(1.0)
    actions = b.handle(TimerFired(1.0), 1.0)
    assert failed(actions) == {1: Code.DEADLINE_EXCEEDED, 2: Code.DEADLINE_EXCEEDED}
    assert "backend timeout of 1 s" in actions[0].failures[0][1].message
    assert ReplaceExecutor(0, 1, actions[1].reason) in actions
    assert CapacityChanged(0) in actions
    assert b.queue_depth == 2 and b.executors_up == 0
    assert QueueReleased(((1, -2),)) in actions  # 3 and 4 are back in the queue


def test_replacement_picks_up_the_requeued_work_and_stale_reports_are_ignored():
    b = hung_rig()
    b.handle(TimerFired(1.0), 1.0)
    assert b.handle(ExecutorFree(0, 0, 5.0), 5.0) == []  # the old incarnation, far too late
    actions = b.handle(ExecutorUp(0, 1), 1.5)
    assert dispatched(actions) == [[3, 4]] and CapacityChanged(1) in actions


def test_dead_executor_fails_everything_it_held():
    b = hung_rig()
    actions = b.handle(ExecutorDown(0, 0, "executor 0 died: boom"), 0.5)
    assert failed(actions) == {i: Code.INTERNAL for i in (1, 2, 3, 4)}
    assert ReplaceExecutor(0, 1, "executor 0 died: boom") in actions


def test_no_replacement_is_asked_after_close():
    b = make()
    b.handle(Drain(), 0.0)
    assert b.handle(ExecutorDown(0, 0, "gone"), 0.1) == []
