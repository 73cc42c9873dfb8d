"""The retry strategy that heeds the sidecar's hint (sidecar/flink/retry.py).

Driven as PyFlink drives it: the predicate first, then the backoff, on one thread
(PyFlink's RetryableResultHandler, used as is in the last tests).
"""

from __future__ import annotations

import importlib.util

from tests.environment import need

need("flink", None if importlib.util.find_spec("pyflink") else "needs PyFlink: pip install 'apache-flink==2.3.0' -e '.[flink]'")

import pickle  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import cloudpickle  # noqa: E402
import pytest  # noqa: E402
from pyflink.fn_execution.datastream.process.async_function.operation import (  # noqa: E402
    ResultHandler,
    RetryableResultHandler,
)

from sidecar.flink import (  # noqa: E402
    SidecarPermanentError,
    SidecarRetryableError,
    SidecarRetryPredicate,
)
from sidecar.flink.retry import SidecarRetryStrategy  # noqa: E402
from sidecar.flink.stats import FunctionStats  # noqa: E402

FULL = SidecarRetryableError("RESOURCE_EXHAUSTED", "queue is full", retry_after_s=1.5)
WAIT_S = 10.0


def exact(**options) -> SidecarRetryStrategy:
    return SidecarRetryStrategy(**{"initial_delay_ms": 50, "max_delay_ms": 1000, "jitter": 0.0, **options})


def sees(strategy: SidecarRetryStrategy, error: BaseException) -> bool:
    return strategy.get_retry_predicate().exception_predicate()(error)


def wrapping(inner: BaseException) -> RuntimeError:
    try:
        raise inner
    except BaseException as error:  # noqa: BLE001 - to wrap it, whatever it is
        try:
            raise RuntimeError("the function failed") from error
        except RuntimeError as outer:
            return outer


# ---- the backoff ------------------------------------------------------------------------


def test_backoff_doubles_with_the_records_own_attempt_up_to_its_cap():
    strategy = exact()
    assert [strategy.get_backoff_time_millis(n) for n in range(1, 8)] == [50, 100, 200, 400, 800, 1000, 1000]


def test_backoff_follows_each_records_attempt_not_the_number_of_calls():
    """Flink's exponential strategy keeps one delay for all records; this one does not."""
    strategy = exact()
    assert [strategy.get_backoff_time_millis(n) for n in (1, 4, 1, 2, 1, 5)] == [50, 400, 50, 100, 50, 800]


def test_jitter_only_shortens_the_backoff_within_its_fraction():
    strategy = exact(jitter=0.3)
    delays = [strategy.get_backoff_time_millis(3) for _ in range(500)]  # ceiling 200 ms
    assert int(200 * 0.7) <= min(delays) and max(delays) <= 200
    assert max(delays) - min(delays) > 30  # spread: records refused together come back apart


def test_backoff_is_at_least_one_millisecond():
    assert SidecarRetryStrategy(initial_delay_ms=0.01, max_delay_ms=0.01, jitter=0.0).get_backoff_time_millis(1) == 1


def test_a_late_attempt_of_a_long_retrying_strategy_waits_the_cap():
    strategy = exact(max_attempts=1_000_000)
    assert strategy.can_retry(2000)
    assert strategy.get_backoff_time_millis(2000) == 1000


# ---- the server's hint ------------------------------------------------------------------


def test_backoff_is_never_below_the_hint_of_the_error_the_predicate_just_saw():
    strategy = exact()
    assert sees(strategy, FULL)
    assert strategy.get_backoff_time_millis(1) == 1500
    small = SidecarRetryableError("RESOURCE_EXHAUSTED", "queue is full", retry_after_s=0.01)
    assert sees(strategy, small)
    assert strategy.get_backoff_time_millis(3) == 200  # the backoff is the larger


def test_the_hint_does_not_leak_to_the_next_backoff():
    strategy = exact()
    assert sees(strategy, FULL)
    assert strategy.get_backoff_time_millis(1) == 1500
    assert strategy.get_backoff_time_millis(1) == 50
    assert sees(strategy, FULL)
    assert not sees(strategy, SidecarPermanentError("INTERNAL", "x"))  # a later error replaces it
    assert strategy.get_backoff_time_millis(1) == 50


def test_a_wrapped_retryable_errors_hint_is_heeded():
    strategy = exact()
    assert sees(strategy, wrapping(FULL))
    assert strategy.get_backoff_time_millis(1) == 1500


def test_a_hint_seen_on_one_thread_does_not_reach_another():
    strategy = exact()
    seen = threading.Thread(target=sees, args=(strategy, FULL))
    seen.start()
    seen.join(WAIT_S)
    assert strategy.get_backoff_time_millis(1) == 50


# ---- the predicate and the attempts -----------------------------------------------------


@pytest.mark.parametrize(
    "error, retry",
    [
        (FULL, True),
        (SidecarRetryableError("UNAVAILABLE", "restarting"), True),
        (wrapping(SidecarRetryableError("UNAVAILABLE", "restarting")), True),
        (SidecarPermanentError("INVALID_ARGUMENT", "bad shape"), False),
        (wrapping(SidecarPermanentError("INTERNAL", "model failed")), False),
        (TimeoutError("flink's timeout"), False),
    ],
)
def test_only_retryable_errors_are_retried_and_results_never(error, retry):
    for predicate in (exact().get_retry_predicate(), SidecarRetryPredicate()):
        assert predicate.result_predicate() is None
        assert predicate.exception_predicate()(error) is retry


def test_can_retry_allows_max_attempts_tries_after_the_first():
    strategy = exact(max_attempts=3)
    assert [strategy.can_retry(n) for n in (1, 2, 3, 4, 10)] == [True, True, True, False, False]


@pytest.mark.parametrize(
    "bad",
    [dict(max_attempts=0), dict(initial_delay_ms=0), dict(initial_delay_ms=100, max_delay_ms=50),
     dict(multiplier=0.5), dict(jitter=1.0), dict(jitter=-0.1)],
)
def test_nonsense_is_refused(bad):
    with pytest.raises(ValueError):
        SidecarRetryStrategy(**bad)


# ---- pickling and counting --------------------------------------------------------------


def test_the_strategy_survives_cloudpickle_and_works_after_without_a_hint_from_before():
    strategy = exact(max_attempts=4, multiplier=3.0)
    assert sees(strategy, FULL)  # a hint pending on this thread: not part of what is shipped
    back = pickle.loads(cloudpickle.dumps(strategy))
    assert (back.max_attempts, back.multiplier) == (4, 3.0)
    assert back.get_backoff_time_millis(2) == 150
    assert back.can_retry(4) and not back.can_retry(5)
    assert sees(back, FULL) and back.get_backoff_time_millis(1) == 1500


def test_retries_are_counted_into_the_bound_stats():
    stats = FunctionStats()
    strategy = exact(stats=stats)
    strategy.get_backoff_time_millis(1)
    strategy.get_backoff_time_millis(2)
    assert stats.retries == 2

    class Function:  # stands for a SidecarAsyncFunction, whose stats exist once it is open
        stats = None

    source = Function()
    bound = exact().bind(source)
    bound.get_backoff_time_millis(1)  # not open yet: nothing to count into, and no error
    source.stats = FunctionStats()
    bound.get_backoff_time_millis(1)
    assert source.stats.retries == 1


# ---- inside PyFlink's own retry handler -------------------------------------------------


class Settled:
    def __init__(self) -> None:
        self.done = threading.Event()

    def complete(self, result) -> None:
        self.done.set()


def handled(strategy: SidecarRetryStrategy, errors: list) -> tuple[RetryableResultHandler, list[float], threading.Event]:
    retried_at: list[float] = []
    retried = threading.Event()

    def invoke_again(record, handler) -> None:
        retried_at.append(time.monotonic())
        retried.set()

    inner = ResultHandler("SidecarAsyncFunction", lambda record: [], errors.append, "record", Settled())
    handler = RetryableResultHandler(inner, invoke_again, strategy)
    handler.register_timeout(60)
    return handler, retried_at, retried


def test_pyflinks_retry_handler_waits_at_least_the_servers_hint_and_counts_the_retry():
    stats = FunctionStats()
    strategy = SidecarRetryStrategy(initial_delay_ms=1, max_delay_ms=1, jitter=0.0, stats=stats)
    handler, retried_at, retried = handled(strategy, errors := [])
    try:
        failed_at = time.monotonic()
        handler.complete_exceptionally(SidecarRetryableError("RESOURCE_EXHAUSTED", "queue is full", 0.3))
        assert retried.wait(WAIT_S)
    finally:
        handler._result_handler._timer.cancel()
    assert retried_at[0] - failed_at >= 0.3  # 1 ms without the hint
    assert stats.retries == 1 and not errors


def test_pyflinks_retry_handler_fails_a_permanent_error_at_once():
    stats = FunctionStats()
    handler, _, retried = handled(SidecarRetryStrategy(stats=stats), errors := [])
    handler.complete_exceptionally(SidecarPermanentError("INVALID_ARGUMENT", "bad shape"))
    assert not retried.is_set() and stats.retries == 0
    assert len(errors) == 1 and isinstance(errors[0].args[1], SidecarPermanentError)
    assert handler._result_handler._timer is None  # settled: its timeout timer is gone
