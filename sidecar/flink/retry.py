"""Flink retry strategies that know the sidecar's errors.

`SidecarRetryPredicate`: retry a record whose error is a SidecarRetryableError,
for Flink's own strategies too:

    FixedDelayRetryStrategy(5, 100, None, is_retryable)

`SidecarRetryStrategy` also heeds the server's hint. Flink asks a strategy for the
backoff without the error, but it asks the predicate first, on the same thread,
with nothing in between (PyFlink's RetryableResultHandler): so the predicate
keeps the hint of the error it just saw, per thread, and the backoff is the
larger of that hint and an exponential backoff over the record's own attempt
count (PyFlink's ExponentialBackoffDelayRetryStrategy keeps one delay for all
records instead). A jitter takes up to `jitter` of the backoff off at random, so
records refused together do not come back together.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

from pyflink.datastream.functions import AsyncRetryPredicate, AsyncRetryStrategy

from sidecar.backoff import capped_exponential
from sidecar.flink.errors import is_retryable, retryable_in
from sidecar.flink.stats import FunctionStats


class SidecarRetryPredicate(AsyncRetryPredicate):
    """Retries records that failed with a SidecarRetryableError; results are never retried.
    `test` replaces is_retryable (SidecarRetryStrategy passes one that keeps the hint)."""

    def __init__(self, test: Callable[[BaseException], bool] = is_retryable) -> None:
        self._test = test

    def result_predicate(self):
        return None

    def exception_predicate(self) -> Callable[[BaseException], bool]:
        return self._test


class SidecarRetryStrategy(AsyncRetryStrategy):
    """`max_attempts` retries (Flink's meaning: tries after the first), the n-th after
    max(server hint, min(max_delay_ms, initial_delay_ms * multiplier ** (n - 1)))."""

    def __init__(
        self,
        max_attempts: int = 10,
        initial_delay_ms: int = 50,
        max_delay_ms: int = 2000,
        multiplier: float = 2.0,
        jitter: float = 0.2,
        stats: FunctionStats | None = None,
    ) -> None:
        if max_attempts < 1 or initial_delay_ms <= 0 or max_delay_ms < initial_delay_ms or multiplier < 1:
            raise ValueError(
                f"invalid retry strategy: max_attempts={max_attempts} initial_delay_ms={initial_delay_ms} "
                f"max_delay_ms={max_delay_ms} multiplier={multiplier}"
            )
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        self.max_attempts = max_attempts
        self.initial_delay_ms = initial_delay_ms
        self.max_delay_ms = max_delay_ms
        self.multiplier = multiplier
        self.jitter = jitter
        self._stats_source = stats
        self._seen = threading.local()

    def bind(self, source: Any) -> SidecarRetryStrategy:
        """Counts retries into `source.stats` (a SidecarAsyncFunction's, once open)."""
        self._stats_source = source
        return self

    def can_retry(self, current_attempts: int) -> bool:
        return current_attempts <= self.max_attempts

    def get_backoff_time_millis(self, current_attempts: int) -> int:
        ceiling = capped_exponential(self.initial_delay_ms, self.multiplier, current_attempts - 1, self.max_delay_ms)
        backoff = ceiling * (1.0 - self.jitter * random.random())
        hint_s = getattr(self._seen, "hint_s", None)
        self._seen.hint_s = None
        stats = self._stats()
        if stats is not None:
            stats.retries += 1
        return max(1, int(max(backoff, (hint_s or 0.0) * 1000.0)))

    def get_retry_predicate(self) -> AsyncRetryPredicate:
        return SidecarRetryPredicate(self._retry_on)

    def _retry_on(self, error: BaseException) -> bool:
        found = retryable_in(error)
        self._seen.hint_s = None if found is None else found.retry_after_s
        return found is not None

    def _stats(self) -> FunctionStats | None:
        source = self._stats_source
        if source is None or isinstance(source, FunctionStats):
            return source
        return getattr(source, "stats", None)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_seen"]  # per thread, and a threading.local does not pickle
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._seen = threading.local()

