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
    ExecutorGivenUp,
    ExecutorLoadFailed,
    ExecutorReleased,
    ExecutorUp,
    FailRequests,
    Fatal,
    QueueReleased,
    ReloadScheduled,
    ReplaceExecutor,
    ServiceRate,
    RequestsAdmitted,
    State,
    TimerFired,
    Withdraw,
)
from sidecar.core.executors import reload_delay_s
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


def unavailable(actions) -> list:
    return [f for a in actions if isinstance(a, FailRequests) for _, f in a.failures if f.code is Code.UNAVAILABLE]


def hung_rig():
    """Two executors; 0 will hang on [1,2] with [5,6] waiting behind it, while 1 is full."""
    b = Batcher(BatchLimits(2, 0.0, executors=2, max_inflight_per_executor=2, backend_timeout_s=1.0))
    arrive(b, range(1, 9), at=0.0)  # 0: [1,2] runs, [5,6] waits; 1: [3,4] runs, [7,8] waits
    b.handle(ExecutorFree(1, 0, 0.5), 0.5)  # [7,8] starts at 0.5
    assert dispatched(arrive(b, [9, 10], at=0.6)) == [[9, 10]]  # executor 1 is full again
    return b


def test_hung_backend_fails_its_batch_requeues_the_rest_and_asks_for_a_replacement():
    b = hung_rig()
    assert b.next_deadline() == pytest.approx(1.0)
    actions = b.handle(TimerFired(1.0), 1.0)
    assert actions[0] == CapacityChanged(1)  # first: health turns before clients hear of the hang
    assert failed(actions) == {1: Code.DEADLINE_EXCEEDED, 2: Code.DEADLINE_EXCEEDED}
    assert "backend timeout of 1 s" in actions[1].failures[0][1].message
    assert ReplaceExecutor(0, 1, actions[2].reason) in actions
    assert b.queue_depth == 2 and b.executors_up == 1 and b.stuck_hung == 1
    assert QueueReleased(((1, -2),)) in actions  # 5 and 6 are back in the queue


def test_replacement_picks_up_the_requeued_work_and_stale_reports_are_ignored():
    b = hung_rig()
    b.handle(TimerFired(1.0), 1.0)
    assert b.handle(ExecutorFree(0, 0, 5.0), 1.1) == []  # the old incarnation, far too late
    actions = b.handle(ExecutorUp(0, 1), 1.2)
    assert dispatched(actions) == [[5, 6]] and CapacityChanged(2) in actions


def test_hung_last_executor_fails_its_batch_and_the_rest_unavailable_at_once():
    b = Batcher(BatchLimits(2, 0.0, executors=1, max_inflight_per_executor=2, backend_timeout_s=1.0))
    arrive(b, [1, 2, 3, 4], at=0.0)  # [1,2] runs, [3,4] waits behind it
    actions = b.handle(TimerFired(1.0), 1.0)
    assert failed(actions) == {1: Code.DEADLINE_EXCEEDED, 2: Code.DEADLINE_EXCEEDED, 3: Code.UNAVAILABLE, 4: Code.UNAVAILABLE}
    (why, _) = unavailable(actions)
    assert why.message == "no backend instance is up (1 of 1 being reloaded); retry after 500.0 ms"
    assert why.retry_after_s == pytest.approx(0.5)
    assert b.queue_depth == 0 and b.state is State.IDLE and CapacityChanged(0) in actions


def test_requests_with_no_executor_up_are_answered_unavailable_at_once_with_a_retry_hint():
    b = Batcher(BatchLimits(4, 0.010, executors=1, max_inflight_per_executor=1, backend_timeout_s=1.0))
    arrive(b, [1], at=0.0)
    b.handle(TimerFired(0.010), 0.010)  # [1] runs, and hangs
    b.handle(TimerFired(1.010), 1.010)  # taken down; its replacement loads
    actions = arrive(b, [2, 3], at=1.1)
    assert failed(actions) == {2: Code.UNAVAILABLE, 3: Code.UNAVAILABLE}
    assert unavailable(actions)[0].retry_after_s == pytest.approx(0.5)  # a load is under way
    assert b.queue_depth == 0 and b.next_deadline() is None  # nothing queued, nothing to expire
    b.handle(ExecutorLoadFailed(0, 1, "BackendError: out of memory"), 1.2)  # retried at 1.7
    (why,) = unavailable(arrive(b, [4], at=1.3))
    assert why.retry_after_s == pytest.approx(0.4)  # until the next attempt
    assert "no backend instance is up (1 of 1 being reloaded); retry after 400.0 ms" == why.message


def test_queued_requests_fail_unavailable_when_the_last_executor_dies():
    b = make(max_batch=4, window=0.010, inflight=1)
    arrive(b, [1, 2, 3, 4], at=0.0)  # running
    arrive(b, [5, 6], at=0.001)  # queued behind
    actions = b.handle(ExecutorDown(0, 0, "executor 0 died: boom"), 0.002)
    assert failed(actions) == {1: Code.INTERNAL, 2: Code.INTERNAL, 3: Code.INTERNAL, 4: Code.INTERNAL,
                               5: Code.UNAVAILABLE, 6: Code.UNAVAILABLE}
    assert b.queue_depth == 0
    assert QueueReleased(((1, 2),)) in actions  # the queued two left the queue (the others at dispatch)


def test_queued_requests_wait_while_another_executor_is_up():
    b = make(max_batch=2, window=0.0, executors=2, inflight=1)
    arrive(b, [1, 2, 3, 4], at=0.0)  # one batch on each
    arrive(b, [5], at=0.001)
    actions = b.handle(ExecutorDown(0, 0, "executor 0 died"), 0.002)
    assert failed(actions) == {1: Code.INTERNAL, 2: Code.INTERNAL}
    assert b.queue_depth == 1
    assert dispatched(b.handle(ExecutorFree(1, 0, 0.002), 0.003)) == [[5]]


def test_dead_executor_fails_everything_it_held():
    b = Batcher(BatchLimits(2, 0.0, executors=1, max_inflight_per_executor=2, backend_timeout_s=1.0))
    arrive(b, [1, 2, 3, 4], at=0.0)
    actions = b.handle(ExecutorDown(0, 0, "executor 0 died: boom"), 0.5)
    assert failed(actions) == {i: Code.INTERNAL for i in (1, 2, 3, 4)}
    assert ReplaceExecutor(0, 1, "executor 0 died: boom") in actions
    assert b.stuck_hung == 0  # it died: nothing of it is left holding a backend


# ---- reloads: backoff, give up, fatal ----------------------------------------------------


def test_reload_delays_double_from_half_a_second_up_to_thirty():
    assert [reload_delay_s(n) for n in range(1, 10)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert reload_delay_s(10_000) == 30.0
    with pytest.raises(ValueError):
        reload_delay_s(0)


def down_and_loading(reload_attempts=4, executors=1, max_hung=5) -> Batcher:
    b = Batcher(BatchLimits(1, 0.0, executors=executors, max_inflight_per_executor=1, backend_timeout_s=1.0,
                            max_hung=max_hung, reload_attempts=reload_attempts))
    b.handle(ExecutorDown(0, 0, "executor 0 died"), 0.0)  # incarnation 1 loads
    return b


def test_failed_reload_is_retried_with_doubling_backoff_then_given_up_and_fatal():
    b = down_and_loading(reload_attempts=4)
    attempts = []
    now = 0.0
    for incarnation in (1, 2, 3):
        now += 0.1  # each load takes 100 ms to fail
        actions = b.handle(ExecutorLoadFailed(0, incarnation, "BackendError: CUDA out of memory"), now)
        (scheduled,) = [a for a in actions if isinstance(a, ReloadScheduled)]
        assert scheduled.failed_loads == incarnation and b.next_deadline() == scheduled.at
        attempts.append(round(scheduled.at - now, 9))
        now = scheduled.at
        (replace,) = [a for a in b.handle(TimerFired(now), now) if isinstance(a, ReplaceExecutor)]
        assert replace.incarnation == incarnation + 1
    assert attempts == [0.5, 1.0, 2.0]
    actions = b.handle(ExecutorLoadFailed(0, 4, "BackendError: CUDA out of memory"), now + 0.1)
    assert ExecutorGivenUp(0, 4, "BackendError: CUDA out of memory") in actions
    (fatal,) = [a for a in actions if isinstance(a, Fatal)]
    assert "no backend instance is up and none can come back" in fatal.reason
    assert "CUDA out of memory" in fatal.reason
    assert b.state is State.FAILED and b.next_deadline() is None


def test_each_retry_is_a_fresh_replacement_under_a_new_incarnation_naming_its_attempt():
    b = down_and_loading(reload_attempts=3)
    b.handle(ExecutorLoadFailed(0, 1, "BackendError: no GPU"), 0.1)
    actions = b.handle(TimerFired(0.6), 0.6)
    (replace,) = [a for a in actions if isinstance(a, ReplaceExecutor)]
    assert replace.executor == 0 and replace.incarnation == 2
    assert replace.reason == "retrying the load of backend instance 0 (attempt 2 of 3); the last one failed: BackendError: no GPU"
    assert b.handle(ExecutorLoadFailed(0, 1, "late"), 0.7) == []  # the old attempt: ignored
    assert b.handle(ExecutorUp(0, 1), 0.7) == []  # likewise
    actions = b.handle(ExecutorUp(0, 2), 0.8)
    assert CapacityChanged(1) in actions and b.executors_up == 1


def test_a_reload_that_succeeds_starts_the_backoff_afresh():
    b = down_and_loading(reload_attempts=3)
    b.handle(ExecutorLoadFailed(0, 1, "BackendError: no GPU"), 0.1)
    b.handle(TimerFired(0.6), 0.6)
    b.handle(ExecutorUp(0, 2), 0.7)
    b.handle(ExecutorDown(0, 2, "died again"), 1.0)
    actions = b.handle(ExecutorLoadFailed(0, 3, "BackendError: no GPU"), 1.1)
    assert [a.at for a in actions if isinstance(a, ReloadScheduled)] == [pytest.approx(1.6)]  # 0.5 s, not 2 s


def test_a_replacement_that_dies_while_loading_counts_as_a_failed_load():
    b = down_and_loading(reload_attempts=2)
    actions = b.handle(ExecutorDown(0, 1, "stopped"), 0.1)
    assert [a.at for a in actions if isinstance(a, ReloadScheduled)] == [pytest.approx(0.6)]


def test_one_instance_given_up_is_not_fatal_while_another_is_up():
    b = down_and_loading(reload_attempts=1, executors=2)
    actions = b.handle(ExecutorLoadFailed(0, 1, "BackendError: no GPU"), 0.1)
    assert ExecutorGivenUp(0, 1, "BackendError: no GPU") in actions
    assert not [a for a in actions if isinstance(a, Fatal)] and b.state is State.IDLE
    assert dispatched(arrive(b, [1], at=0.2)) == [[1]]  # instance 1 serves on


def test_more_hung_instances_stuck_than_max_hung_is_fatal():
    b = Batcher(BatchLimits(1, 0.0, executors=3, max_inflight_per_executor=1, backend_timeout_s=1.0, max_hung=1))
    arrive(b, [1], at=0.0)  # executor 0 takes it, and hangs
    actions = b.handle(TimerFired(1.0), 1.0)
    assert b.stuck_hung == 1 and not [a for a in actions if isinstance(a, Fatal)]
    arrive(b, [2], at=1.1)  # executor 1 (the least loaded) takes it, and hangs
    arrive(b, [3, 4], at=1.5)  # 3 goes to executor 2; 4 waits in the queue
    assert b.queue_depth == 1
    actions = b.handle(TimerFired(2.1), 2.1)
    (fatal,) = [a for a in actions if isinstance(a, Fatal)]
    assert fatal.reason.startswith("2 backend instance(s) given up on as hung have not returned from their calls, "
                                   "more than sidecar.backend.max-hung (1)")
    assert failed(actions) == {2: Code.DEADLINE_EXCEEDED, 4: Code.UNAVAILABLE}
    assert "exiting after a fatal fault" in unavailable(actions)[0].message
    assert not [a for a in actions if isinstance(a, ReplaceExecutor)]  # no new instance: the process exits
    assert b.state is State.FAILED and b.queue_depth == 0
    # from now on everything is refused, nothing is dispatched, and Fatal is not repeated
    later = arrive(b, [5], at=2.2)
    assert failed(later) == {5: Code.UNAVAILABLE} and not [a for a in later if isinstance(a, Fatal | DispatchBatch)]
    after = b.handle(ExecutorFree(2, 0, 0.5), 2.3)  # [3] still finishes; nothing else happens
    assert not [a for a in after if isinstance(a, DispatchBatch | FailRequests | ReplaceExecutor | Fatal)]


def test_a_hung_call_that_returns_no_longer_counts_against_the_cap():
    b = Batcher(BatchLimits(1, 0.0, executors=2, max_inflight_per_executor=1, backend_timeout_s=1.0, max_hung=1))
    arrive(b, [1], at=0.0)
    b.handle(TimerFired(1.0), 1.0)  # executor 0 given up on as hung: stuck 1
    b.handle(ExecutorReleased(0, 1), 1.1)  # a later incarnation: not the stuck one
    assert b.stuck_hung == 1
    b.handle(ExecutorReleased(0, 0), 1.2)  # its call returned and its actor stopped
    assert b.stuck_hung == 0
    arrive(b, [2], at=1.3)  # executor 1 hangs too
    actions = b.handle(TimerFired(2.3), 2.3)
    assert b.stuck_hung == 1 and not [a for a in actions if isinstance(a, Fatal)] and b.state is not State.FAILED


def test_max_hung_zero_makes_the_first_hang_fatal():
    b = Batcher(BatchLimits(1, 0.0, executors=2, max_inflight_per_executor=1, backend_timeout_s=1.0, max_hung=0))
    arrive(b, [1], at=0.0)
    actions = b.handle(TimerFired(1.0), 1.0)
    assert [type(a) for a in actions if isinstance(a, Fatal)] == [Fatal] and b.state is State.FAILED


# ---- where a request may go: the slot behind a running batch ----------------------------


def busy_with_estimate():
    """One executor, two slots; a batch takes 10 ms; [3,4] runs from 10 ms."""
    b = make(max_batch=2, window=0.0, inflight=2)
    arrive(b, [1, 2], at=0.0)
    b.handle(ExecutorFree(0, 0, 0.010), 0.010)  # the estimate: 10 ms
    assert dispatched(arrive(b, [3, 4], at=0.010)) == [[3, 4]]
    return b


def test_slot_behind_a_running_batch_takes_only_requests_that_can_finish_from_it():
    b = busy_with_estimate()
    # at 12 ms, the second slot starts at 20 ms (10 ms estimate, 2 ms of it run) and ends at 30 ms
    actions = b.handle(RequestsAdmitted(admitted([request(5, at=0.012, timeout=0.020),  # due 32 ms: fits
                                                  request(6, at=0.012, timeout=0.013)],  # due 25 ms: does not
                                                 0.012)), 0.012)
    assert dispatched(actions) == [[5]]
    assert b.queue_depth == 1 and b.inflight_batches == (2,)
    (due,) = timers(actions)
    assert due == pytest.approx(0.015)  # 25 ms - 10 ms: when 6 becomes hopeless
    actions = b.handle(TimerFired(due), due)
    assert failed(actions) == {6: Code.DEADLINE_EXCEEDED}
    assert "can no longer finish by its deadline" in actions[0].failures[0][1].message


def test_request_left_out_of_a_busy_slot_goes_when_the_executor_is_free():
    b = busy_with_estimate()
    actions = b.handle(RequestsAdmitted(admitted([request(6, at=0.012, timeout=0.013)], 0.012)), 0.012)
    assert dispatched(actions) == [] and b.queue_depth == 1  # would end at 30 ms, due at 25 ms
    actions = b.handle(ExecutorFree(0, 0, 0.010), 0.014)
    assert dispatched(actions) == [[6]]  # starts at 14 ms on an idle executor, ends about 24 ms


def test_the_estimated_start_counts_the_batches_ahead_less_what_the_running_one_has_run():
    b = make(max_batch=1, window=0.0, inflight=3)
    arrive(b, [1], at=0.0)
    b.handle(ExecutorFree(0, 0, 0.010), 0.010)  # estimate 10 ms
    arrive(b, [2, 3], at=0.010)  # [2] runs from 10 ms, [3] behind it
    # at 14 ms: two batches ahead (20 ms) less 4 ms run: starts at 30 ms, ends at 40 ms
    actions = b.handle(RequestsAdmitted(admitted([request(4, at=0.014, timeout=0.0259)], 0.014)), 0.014)
    assert dispatched(actions) == []  # due at 39.9 ms
    actions = b.handle(RequestsAdmitted(admitted([request(5, at=0.014, timeout=0.026)], 0.014)), 0.014)
    assert dispatched(actions) == [[5]]  # due at 40 ms: just fits


def test_without_a_compute_estimate_any_slot_will_do():
    b = make(max_batch=1, window=0.0, inflight=2)
    actions = arrive(b, [1, 2], at=0.0, timeout=0.001)
    assert dispatched(actions) == [[1], [2]]


# ---- what admission is told about capacity -------------------------------------------------


def rates(actions) -> list:
    return [a.per_s for a in actions if isinstance(a, ServiceRate)]


def test_service_rate_comes_from_the_window_until_a_batch_is_timed_then_from_the_estimate():
    b = make(max_batch=4, window=0.010, executors=2, inflight=1)
    assert rates(arrive(b, [1], at=0.0)) == [pytest.approx(4 * 2 / 0.010)]
    actions = arrive(b, [2, 3, 4], at=0.001)  # a full batch goes out
    assert rates(actions) == []  # unchanged
    assert rates(b.handle(ExecutorFree(0, 0, 0.020), 0.021)) == [pytest.approx(4 * 2 / 0.020)]
    # small moves are not reported; a lost executor is
    assert rates(b.handle(ExecutorDown(1, 0, "died"), 0.022)) == [pytest.approx(4 * 1 / 0.020)]


def test_no_service_rate_without_a_window_or_a_timed_batch():
    b = make(max_batch=4, window=0.0)
    assert rates(arrive(b, [1], at=0.0)) == [None]


def test_no_replacement_is_asked_after_close():
    b = make()
    b.handle(Drain(), 0.0)
    assert b.handle(ExecutorDown(0, 0, "gone"), 0.1) == []
