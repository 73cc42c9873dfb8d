"""The batcher state machine, driven with explicit events and times; no clock, no sleep."""

from __future__ import annotations

import pytest

from sidecar.core.batcher import (
    ArmTimer,
    Batcher,
    BatcherError,
    BatchLimits,
    CapacityChanged,
    Dispatch,
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

EAGER, WINDOW = Dispatch.EAGER_WHEN_IDLE, Dispatch.WINDOW


def make(max_batch=4, window=0.010, executors=1, inflight=1, dispatch=None) -> Batcher:
    # Tests that hold a partial batch beside an idle executor say dispatch=WINDOW;
    # the rest batch alike under either policy.
    extra = {} if dispatch is None else {"dispatch": dispatch}
    return Batcher(BatchLimits(max_batch, window, executors, inflight, **extra))


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
    b = make(max_batch=4, window=0.010, dispatch=WINDOW)
    actions = arrive(b, [1, 2], at=1.0)
    assert dispatched(actions) == []
    assert timers(actions) == [pytest.approx(1.010)]
    assert b.state is State.COLLECTING
    assert b.queue_depth == 2


def test_partial_batch_does_not_dispatch_before_window_elapses():
    b = make(max_batch=4, window=0.010, dispatch=WINDOW)
    arrive(b, [1, 2], at=1.0)
    assert dispatched(b.handle(TimerFired(1.009), 1.009)) == []
    assert b.state is State.COLLECTING


def test_flushes_partial_batch_when_window_elapses():
    b = make(max_batch=4, window=0.010, dispatch=WINDOW)
    arrive(b, [1, 2], at=1.0)
    actions = b.handle(TimerFired(1.010), 1.010)
    assert dispatched(actions) == [[1, 2]]
    assert timers(actions) == [None]
    assert b.state is State.IDLE


def test_timer_that_fires_a_hair_early_still_counts_as_on_time():
    b = make(max_batch=4, window=0.010, dispatch=WINDOW)
    arrive(b, [1], at=1.0)
    assert dispatched(b.handle(TimerFired(1.010), 1.0099999)) == [[1]]


def test_window_counts_from_oldest_queued_request():
    b = make(max_batch=4, window=0.010, dispatch=WINDOW)
    arrive(b, [1], at=1.000)
    actions = arrive(b, [2], at=1.006)
    assert timers(actions) == []  # the deadline is still the oldest's
    assert dispatched(b.handle(TimerFired(1.010), 1.010)) == [[1, 2]]


def test_window_restarts_from_new_oldest_after_dispatch():
    b = make(max_batch=2, window=0.010, inflight=4, dispatch=WINDOW)
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
    b = make(max_batch=8, window=0.010, inflight=2, dispatch=WINDOW)
    arrive(b, [1, 2, 3, 4, 5, 6, 7, 8], at=0.0)
    b.handle(ExecutorFree(0, 0, 0.001), 0.004)  # the estimate is the first sample: 1 ms
    actions = arrive(b, [9], at=0.005, timeout=0.003)
    # deadline 8 ms minus 1 ms estimate comes before the window end at 15 ms
    assert timers(actions) == [pytest.approx(0.008 - b.compute_estimate_s)]
    due = 0.008 - b.compute_estimate_s
    assert dispatched(b.handle(TimerFired(due), due)) == [[9]]


def test_withdrawn_requests_are_cancelled_and_leave_queue():
    b = make(max_batch=4, dispatch=WINDOW)
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
    b = make(max_batch=4, dispatch=WINDOW)
    arrive(b, [1], at=0.0)
    actions = arrive(b, [1], at=0.001)
    assert failed(actions) == {1: Code.INVALID_ARGUMENT}
    assert b.queue_depth == 1


def test_executor_free_without_batch_in_flight_is_illegal_and_changes_nothing():
    b = make(max_batch=4, dispatch=WINDOW)
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
    b = make(max_batch=4, window=0.010, inflight=2, dispatch=WINDOW)
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


# ---- the dispatch policy: eager when idle ------------------------------------------------


def sent(actions) -> list[tuple[int, list[int]]]:
    return [(a.executor, [r.request_id for r in a.requests]) for a in actions if isinstance(a, DispatchBatch)]


def timed_busy(dispatch=EAGER, compute=0.010):
    """One executor, two slots, max batch 8, window 2 ms; a batch takes `compute` (now
    estimated). [10] arrives at 0.1 s to the idle executor: under eager it starts at once."""
    b = make(max_batch=8, window=0.002, inflight=2, dispatch=dispatch)
    arrive(b, range(8), at=0.0)
    b.handle(ExecutorFree(0, 0, compute), compute)
    assert sent(arrive(b, [10], at=0.1)) == ([(0, [10])] if dispatch is EAGER else [])
    return b


def test_eager_lone_request_to_an_idle_executor_goes_at_once_with_no_timer():
    b = make(max_batch=4, window=0.010, dispatch=EAGER)
    actions = arrive(b, [1], at=1.0)
    assert dispatched(actions) == [[1]]
    assert [a.dispatched_at for a in actions if isinstance(a, DispatchBatch)] == [1.0]
    assert timers(actions) == [] and b.next_deadline() is None  # nothing armed, nothing to wait for
    assert b.state is State.IDLE and b.inflight_batches == (1,)


def test_window_policy_holds_the_same_lone_request_for_the_window():
    b = make(max_batch=4, window=0.010, dispatch=WINDOW)
    actions = arrive(b, [1], at=1.0)
    assert dispatched(actions) == [] and timers(actions) == [pytest.approx(1.010)]
    assert dispatched(b.handle(TimerFired(1.010), 1.010)) == [[1]]


def test_eager_requests_arriving_while_busy_collect_until_it_is_due_to_run_dry_not_the_window():
    b = timed_busy(compute=0.010)  # [10] runs from 0.100, due to end at 0.110
    actions = arrive(b, [11, 12], at=0.101)  # the slot behind it is free, but the executor works
    assert dispatched(actions) == [] and timers(actions) == [pytest.approx(0.110)]  # not 0.103
    assert dispatched(arrive(b, [13], at=0.105)) == []  # it joins them, past their window
    actions = b.handle(TimerFired(0.110), 0.110)
    assert sent(actions) == [(0, [11, 12, 13])] and b.inflight_batches == (2,)  # behind [10], still running


def test_window_policy_sends_requests_arriving_while_busy_into_the_slot_behind_at_the_window():
    b = timed_busy(WINDOW, compute=0.010)
    due = b.next_deadline()
    assert due == pytest.approx(0.102) and sent(b.handle(TimerFired(due), due)) == [(0, [10])]  # runs to 0.112
    actions = arrive(b, [11, 12], at=0.103)
    (due,) = timers(actions)
    assert due == pytest.approx(0.105)
    assert sent(b.handle(TimerFired(due), due)) == [(0, [11, 12])]


def test_eager_requests_arriving_while_busy_go_as_soon_as_they_fill_a_batch():
    b = timed_busy()
    arrive(b, range(11, 16), at=0.101)
    assert dispatched(arrive(b, [16, 17, 18], at=0.102)) == [[11, 12, 13, 14, 15, 16, 17, 18]]


def test_eager_requests_collected_while_busy_go_at_once_when_the_executor_runs_dry_early():
    b = timed_busy(compute=0.010)
    arrive(b, [11, 12], at=0.101)
    actions = b.handle(ExecutorFree(0, 0, 0.004), 0.104)  # [10] ended 6 ms early: the executor is idle
    assert dispatched(actions) == [[11, 12]] and timers(actions) == [None]


def test_eager_until_a_batch_is_timed_the_window_stands_in_for_the_estimate():
    # 8 in flight on a fresh executor: the first goes alone at once; the next 7 collect
    # while it runs and leave together when it finishes, before their window ends.
    b = make(max_batch=32, window=0.002, inflight=2, dispatch=EAGER)
    assert dispatched(arrive(b, [0], at=0.0)) == [[0]]
    actions = arrive(b, range(1, 8), at=0.0002)
    assert dispatched(actions) == [] and timers(actions) == [pytest.approx(0.0022)]
    actions = b.handle(ExecutorFree(0, 0, 0.00202), 0.00202)
    assert dispatched(actions) == [[1, 2, 3, 4, 5, 6, 7]] and timers(actions) == [None]


def test_eager_until_a_batch_is_timed_a_busy_slot_takes_a_partial_batch_at_the_window():
    b = make(max_batch=4, window=0.010, inflight=2, dispatch=EAGER)
    arrive(b, [1], at=0.0)
    arrive(b, [2, 3], at=0.001)
    assert dispatched(b.handle(TimerFired(0.010), 0.010)) == []
    assert sent(b.handle(TimerFired(0.011), 0.011)) == [(0, [2, 3])]


def test_eager_a_batch_waiting_behind_the_running_one_keeps_the_executor_busy():
    b = make(max_batch=2, window=0.010, inflight=2, dispatch=EAGER)
    arrive(b, [1], at=0.0)  # runs
    assert dispatched(arrive(b, [2, 3], at=0.001)) == [[2, 3]]  # full: behind [1]
    arrive(b, [4], at=0.002)  # no slot free
    actions = b.handle(ExecutorFree(0, 0, 0.003), 0.003)  # [2,3] starts: the executor still works
    assert dispatched(actions) == [] and timers(actions) == [pytest.approx(0.006)]  # 3 ms estimate
    assert sent(b.handle(TimerFired(0.006), 0.006)) == [(0, [4])]
    assert b.inflight_batches == (2,)


def test_eager_with_two_executors_one_idle_takes_a_request_while_the_other_works():
    b = make(max_batch=4, window=0.010, executors=2, inflight=2, dispatch=EAGER)
    assert sent(arrive(b, [1], at=0.0)) == [(0, [1])]
    assert sent(arrive(b, [2], at=0.001)) == [(1, [2])]  # executor 0 works, executor 1 is idle
    actions = arrive(b, [3], at=0.002)  # both work now, nothing timed yet: the window
    assert dispatched(actions) == [] and timers(actions) == [pytest.approx(0.012)]
    assert sent(b.handle(ExecutorFree(1, 0, 0.002), 0.003)) == [(1, [3])]  # 1 runs dry first


def test_eager_with_two_busy_executors_the_chosen_one_is_the_least_loaded_and_its_end_is_due():
    b = make(max_batch=4, window=0.002, executors=2, inflight=2, dispatch=EAGER)
    arrive(b, [1, 2, 3, 4], at=0.0)
    b.handle(ExecutorFree(0, 0, 0.010), 0.010)  # estimate 10 ms
    assert sent(arrive(b, [5], at=0.020)) == [(0, [5])]  # due to end 0.030
    assert sent(arrive(b, [6], at=0.025)) == [(1, [6])]  # due to end 0.035
    actions = arrive(b, [7], at=0.026)  # both hold one: executor 0 (lowest id) is chosen
    assert timers(actions) == [pytest.approx(0.030)]
    assert sent(b.handle(TimerFired(0.030), 0.030)) == [(0, [7])]


def test_eager_an_executor_that_comes_back_takes_what_is_queued_at_once():
    b = make(max_batch=4, window=0.010, executors=2, inflight=1, dispatch=EAGER)
    b.handle(ExecutorDown(1, 0, "died"), 0.0)
    arrive(b, [1], at=0.001)  # to executor 0
    assert dispatched(arrive(b, [2], at=0.002)) == []  # 0 works, 1 loads
    assert sent(b.handle(ExecutorUp(1, 1), 0.003)) == [(1, [2])]


def test_eager_with_a_window_of_zero_still_holds_a_busy_slot_until_its_executor_runs_dry():
    logs = {}
    for dispatch in (EAGER, WINDOW):
        b = make(max_batch=3, window=0.0, inflight=2, dispatch=dispatch)
        arrive(b, [1, 2, 3], at=0.0)
        b.handle(ExecutorFree(0, 0, 0.002), 0.002)  # estimate 2 ms
        logs[dispatch] = [sent(arrive(b, [4], at=0.003)), sent(arrive(b, [5], at=0.004))]
        logs[dispatch].append(sent(b.handle(TimerFired(0.005), 0.005)))
    assert logs[WINDOW] == [[(0, [4])], [(0, [5])], []]  # as soon as a slot is free
    assert logs[EAGER] == [[(0, [4])], [], [(0, [5])]]  # [4] runs from 3 to 5 ms; [5] waits for that


def test_rejects_a_dispatch_policy_given_as_text():
    with pytest.raises(ValueError, match="dispatch must be a Dispatch"):
        Batcher(BatchLimits(4, 0.010, 1, 1, dispatch="window"))


# ---- the policies in a closed loop: a model of the benchmark, on explicit time ----------


def closed_loop(dispatch, inflight, executors=1, *, spread=0.0, first_alone=False, seconds=1.0, warmup=0.1):
    """`inflight` clients, each sending its next request a round trip (1.5 ms) after
    its answer; the backend takes 2 ms + 0.02 ms per item (the benchmark's mock),
    batches of up to 32, window 2 ms, 2 in flight per executor. The answers of one
    batch come back as one message, or (`spread`) one by one that far apart, as
    unpacked ones do; `first_alone`: one request arrives before the others.
    Returns (answers a second, p50 of arrival to answer in ms, batch sizes)."""
    import heapq

    round_trip, base, per_item = 0.0015, 0.002, 0.00002
    b = Batcher(BatchLimits(32, 0.002, executors, 2, dispatch=dispatch))
    events: list = []  # (time, tiebreak, kind, payload)
    tiebreak = iter(range(10**9))
    ids = iter(range(10**9))
    running: list[list] = [[] for _ in range(executors)]  # per executor: the requests of each batch, in order
    ends = [0.0] * executors
    armed = None
    latencies, sizes = [], []

    def push(at, kind, payload):
        heapq.heappush(events, (at, next(tiebreak), kind, payload))

    def carry_out(actions, now):
        nonlocal armed
        for a in actions:
            if isinstance(a, DispatchBatch):
                start = ends[a.executor] if running[a.executor] else now
                ends[a.executor] = start + base + per_item * len(a.requests)
                running[a.executor].append(a.requests)
                push(ends[a.executor], "free", (a.executor, ends[a.executor] - start))
                if now >= warmup:
                    sizes.append(len(a.requests))
            elif isinstance(a, ArmTimer):
                armed = a.at
                if a.at is not None:
                    push(a.at, "timer", a.at)
            elif isinstance(a, FailRequests):
                raise AssertionError(f"the model should fail nothing: {a}")

    if first_alone:
        push(0.0, "arrive", 1)
        push(0.0001, "arrive", inflight - 1)
    else:
        push(0.0, "arrive", inflight)  # the first requests go out as one message
    while events:
        now, _, kind, payload = heapq.heappop(events)
        if now > warmup + seconds:
            break
        if kind == "arrive":
            reqs = [request(next(ids), at=now) for _ in range(payload)]
            carry_out(b.handle(RequestsAdmitted(admitted(reqs, now)), now), now)
        elif kind == "timer":
            if payload == armed:  # one re-armed since was replaced, not fired
                carry_out(b.handle(TimerFired(payload), now), now)
        elif kind == "free":
            executor, compute = payload
            reqs = running[executor].pop(0)
            carry_out(b.handle(ExecutorFree(executor, 0, compute), now), now)
            if now >= warmup:
                latencies += [now - r.received_at for r in reqs]
            for i in range(len(reqs)) if spread else ():
                push(now + round_trip + i * spread, "arrive", 1)
            if not spread:
                push(now + round_trip, "arrive", len(reqs))
    latencies.sort()
    return len(latencies) / seconds, latencies[len(latencies) // 2] * 1000, sizes


BOUND = 32 / (0.002 + 32 * 0.00002)  # full batches back to back on one executor: 12.1k req/s


@pytest.mark.parametrize("executors", [1, 2])
def test_closed_loop_one_in_flight_eager_answers_in_the_compute_time_the_window_adds_itself(executors):
    rate_e, p50_e, sizes_e = closed_loop(EAGER, 1, executors)
    rate_w, p50_w, sizes_w = closed_loop(WINDOW, 1, executors)
    assert p50_e == pytest.approx(2.02)  # compute alone: nothing waits beside an idle backend
    assert p50_w == pytest.approx(4.02)  # the window, then compute
    assert rate_e == pytest.approx(1 / 0.00352, rel=0.01)
    assert set(sizes_e) == set(sizes_w) == {1}


@pytest.mark.parametrize("executors", [1, 2])
@pytest.mark.parametrize("spread,first_alone", [(0.0, False), (0.0, True), (0.00002, False), (0.0001, False)])
def test_closed_loop_eight_in_flight_eager_is_faster_at_a_lower_median(executors, spread, first_alone):
    rate_e, p50_e, _ = closed_loop(EAGER, 8, executors, spread=spread, first_alone=first_alone)
    rate_w, p50_w, _ = closed_loop(WINDOW, 8, executors, spread=spread, first_alone=first_alone)
    assert p50_e < p50_w - 1.0  # a millisecond or more off the median
    assert rate_e > 1.18 * rate_w  # the target: 1,288 -> 1,520 req/s


@pytest.mark.parametrize("inflight", [64, 256])
@pytest.mark.parametrize("spread,first_alone", [(0.0, False), (0.0, True), (0.00002, False)])
def test_closed_loop_under_load_eager_keeps_batches_full_on_one_executor(inflight, spread, first_alone):
    rate_e, _, sizes_e = closed_loop(EAGER, inflight, spread=spread, first_alone=first_alone)
    rate_w, _, _ = closed_loop(WINDOW, inflight, spread=spread, first_alone=first_alone)
    assert rate_e >= 0.9 * BOUND and rate_e >= 0.99 * rate_w
    assert sum(sizes_e) / len(sizes_e) >= 0.9 * 32


@pytest.mark.parametrize("inflight", [64, 256])
def test_closed_loop_under_load_eager_keeps_batches_full_on_two_executors(inflight):
    rate_e, _, sizes_e = closed_loop(EAGER, inflight, 2)
    rate_w, _, _ = closed_loop(WINDOW, inflight, 2)
    assert rate_e >= 0.99 * rate_w
    assert sum(sizes_e) / len(sizes_e) >= 0.9 * 32
