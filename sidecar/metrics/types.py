"""The four metric types, after org.apache.flink.metrics.

Every type takes updates from its owner (writes hold a small lock, so several
threads may write) while reporter threads read it without locking: a read
either sees a single machine word (`int`) or copies the data first.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

# The quantiles every reporter shows, as Flink's PrometheusReporter does.
QUANTILES: tuple[float, ...] = (0.5, 0.75, 0.95, 0.98, 0.99, 0.999)

MetricKind = Literal["counter", "gauge", "histogram", "meter"]


class Counter:
    """A count that can go up and down (hence exported as a Prometheus gauge)."""

    __slots__ = ("_count", "_lock")

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()  # `+=` is a read-modify-write, not atomic

    def inc(self, n: int = 1) -> None:
        with self._lock:
            self._count += n

    def dec(self, n: int = 1) -> None:
        with self._lock:
            self._count -= n

    @property
    def count(self) -> int:
        return self._count


class Gauge:
    """A value read on demand: `fn` is called at each report, in the reporter's thread."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn

    @property
    def value(self) -> Any:
        return self._fn()


@dataclass(frozen=True, slots=True)
class HistogramStatistics:
    """A snapshot of a histogram's window; empty windows report 0.0 everywhere."""

    values: tuple[float, ...]
    _array: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_array", np.asarray(self.values, dtype=np.float64))

    @classmethod
    def of(cls, values: Iterable[float]) -> HistogramStatistics:
        return cls(tuple(float(v) for v in values))

    @property
    def size(self) -> int:
        return len(self.values)

    def quantile(self, q: float) -> float:
        """numpy's default (linear) interpolation between the closest ranks."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile {q} is outside [0, 1]")
        return float(np.quantile(self._array, q)) if self.size else 0.0

    def quantiles(self, qs: Iterable[float] = QUANTILES) -> tuple[float, ...]:
        return tuple(self.quantile(q) for q in qs)

    @property
    def mean(self) -> float:
        return float(self._array.mean()) if self.size else 0.0

    @property
    def stddev(self) -> float:
        """Sample standard deviation (ddof=1), as Flink's DescriptiveStatistics."""
        return float(self._array.std(ddof=1)) if self.size >= 2 else 0.0

    @property
    def min(self) -> float:
        return float(self._array.min()) if self.size else 0.0

    @property
    def max(self) -> float:
        return float(self._array.max()) if self.size else 0.0


class Histogram:
    """The last `window` values, like Flink's DescriptiveStatisticsHistogram.

    `count` and `sum` cover every value ever recorded (so Prometheus can compute
    rates from `_count`/`_sum`); the statistics cover only the window.
    """

    __slots__ = ("_window", "_count", "_sum", "_lock")

    def __init__(self, window: int = 128) -> None:
        if window < 1:
            raise ValueError(f"histogram window must be at least 1, got {window}")
        self._window: deque[float] = deque(maxlen=window)
        self._count = 0
        self._sum = 0.0
        self._lock = threading.Lock()

    def update(self, value: float) -> None:
        with self._lock:
            self._window.append(value)
            self._count += 1
            self._sum += value

    def update_many(self, values: Iterable[float]) -> None:
        """One lock and one C-level extend for a whole batch of values."""
        vals = values if isinstance(values, (list, tuple)) else list(values)
        with self._lock:
            self._window.extend(vals)
            self._count += len(vals)
            self._sum += float(sum(vals))

    @property
    def count(self) -> int:
        return self._count

    @property
    def sum(self) -> float:
        return self._sum

    def statistics(self) -> HistogramStatistics:
        # list(deque) is one C call, atomic under the GIL: no lock needed to read.
        return HistogramStatistics.of(list(self._window))


@runtime_checkable
class Meter(Protocol):
    """Events and their rate per second (org.apache.flink.metrics.Meter)."""

    def mark_event(self, n: int = 1) -> None: ...

    @property
    def count(self) -> int: ...

    @property
    def rate(self) -> float: ...


class MeterView:
    """A meter over per-second buckets, like Flink's MeterView.

    `rate` is the number of events in the last `time_span_s` COMPLETE seconds
    divided by `time_span_s`; the current, incomplete second is not counted, so
    the rate never dips just because a second has only begun. The buckets are a
    ring of `time_span_s + 1` slots keyed by `int(clock())`: a slot is reused
    (and its old count dropped) once its second falls out of the span.
    """

    __slots__ = ("_clock", "_span", "_slots", "_count", "_lock")

    def __init__(self, clock: Callable[[], float], time_span_s: int = 60) -> None:
        if time_span_s < 1:
            raise ValueError(f"meter time span must be at least 1 s, got {time_span_s}")
        self._clock = clock
        self._span = time_span_s
        # (second, events in it); replaced as a whole tuple so readers never see half an update.
        self._slots: list[tuple[int, int]] = [(-1, 0)] * (time_span_s + 1)
        self._count = 0
        self._lock = threading.Lock()

    def mark_event(self, n: int = 1) -> None:
        second = int(self._clock())
        i = second % len(self._slots)
        with self._lock:
            at, events = self._slots[i]
            self._slots[i] = (second, events + n if at == second else n)
            self._count += n

    @property
    def count(self) -> int:
        return self._count

    @property
    def rate(self) -> float:
        now = int(self._clock())
        events = sum(n for at, n in list(self._slots) if now - self._span <= at < now)
        return events / self._span


Metric = Counter | Gauge | Histogram | Meter


def kind_of(metric: object) -> MetricKind:
    # Concrete classes first: the Meter protocol is structural and checked last.
    if isinstance(metric, Counter):
        return "counter"
    if isinstance(metric, Gauge):
        return "gauge"
    if isinstance(metric, Histogram):
        return "histogram"
    if isinstance(metric, Meter):
        return "meter"
    raise TypeError(f"not a metric: {type(metric).__name__}")
