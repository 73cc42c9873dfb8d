"""Counter, Gauge, Histogram and MeterView on their own."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from sidecar.metrics.types import (
    QUANTILES,
    Counter,
    Gauge,
    Histogram,
    HistogramStatistics,
    Meter,
    MeterView,
    kind_of,
)
from tests.fakes import FakeClock


def assert_matches_numpy(stats: HistogramStatistics, data: np.ndarray) -> None:
    assert stats.size == len(data)
    assert stats.values == tuple(float(x) for x in data)
    for q in (0.0, *QUANTILES, 1.0):
        assert stats.quantile(q) == pytest.approx(float(np.quantile(data, q)), rel=1e-12)
    assert stats.mean == pytest.approx(float(data.mean()), rel=1e-12)
    assert stats.stddev == pytest.approx(float(data.std(ddof=1)), rel=1e-12)
    assert stats.min == float(data.min())
    assert stats.max == float(data.max())


def test_counter_goes_up_and_down():
    c = Counter()
    c.inc()
    c.inc(5)
    c.dec(2)
    assert c.count == 4


def test_counter_loses_no_increments_across_threads():
    c = Counter()
    threads = [threading.Thread(target=lambda: [c.inc() for _ in range(10_000)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.count == 40_000


def test_gauge_calls_its_function_at_every_read():
    depth = [3]
    g = Gauge(lambda: depth[0])
    assert g.value == 3
    depth[0] = 7
    assert g.value == 7


def test_histogram_statistics_match_numpy_within_the_window():
    data = np.random.default_rng(1).exponential(5.0, size=100)
    h = Histogram()
    for x in data:
        h.update(float(x))
    assert_matches_numpy(h.statistics(), data)
    assert h.count == 100
    assert h.sum == pytest.approx(float(data.sum()))


def test_histogram_window_slides_but_count_and_sum_cover_every_value():
    data = np.random.default_rng(2).normal(10.0, 3.0, size=300)
    h = Histogram(window=128)
    h.update_many(data[:50].tolist())
    h.update_many(float(x) for x in data[50:])  # any iterable, a generator too
    assert_matches_numpy(h.statistics(), data[-128:])
    assert h.count == 300
    assert h.sum == pytest.approx(float(data.sum()))


def test_update_many_equals_updating_one_by_one():
    one, many = Histogram(window=8), Histogram(window=8)
    values = [float(i) for i in range(20)]
    for v in values:
        one.update(v)
    many.update_many(values)
    assert one.statistics() == many.statistics()
    assert (one.count, one.sum) == (many.count, many.sum)


def test_empty_histogram_reports_zeros():
    stats = Histogram().statistics()
    assert (stats.size, stats.quantile(0.99), stats.mean, stats.stddev, stats.min, stats.max) == (0, 0.0, 0.0, 0.0, 0.0, 0.0)


def test_single_value_has_zero_stddev():
    h = Histogram()
    h.update(4.0)
    stats = h.statistics()
    assert (stats.stddev, stats.min, stats.max, stats.quantile(0.5)) == (0.0, 4.0, 4.0, 4.0)


def test_statistics_is_a_snapshot_unaffected_by_later_updates():
    h = Histogram()
    h.update_many([1.0, 2.0])
    stats = h.statistics()
    h.update(100.0)
    assert stats.values == (1.0, 2.0)


@pytest.mark.parametrize("q", [-0.1, 1.5])
def test_quantile_outside_unit_interval_is_refused(q):
    with pytest.raises(ValueError, match="outside"):
        Histogram().statistics().quantile(q)


def test_histogram_window_must_hold_a_value():
    with pytest.raises(ValueError, match="at least 1"):
        Histogram(window=0)


def test_statistics_can_be_read_while_a_writer_updates():
    h = Histogram(window=64)
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            h.update_many([1.0, 2.0, 3.0])

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(2_000):
            stats = h.statistics()
            assert stats.size <= 64
            assert stats.min >= 1.0 and stats.max <= 3.0
    finally:
        stop.set()
        writer.join()


def test_meter_rate_counts_the_last_complete_seconds_only():
    clock = FakeClock(start=1000.0)
    m = MeterView(clock.now, time_span_s=10)
    m.mark_event(30)  # in second 1000
    assert m.rate == 0.0  # second 1000 is not complete yet
    clock.advance(1.0)
    m.mark_event(5)  # in second 1001, still incomplete
    assert m.rate == pytest.approx(30 / 10)
    clock.advance(1.0)
    assert m.rate == pytest.approx(35 / 10)
    assert m.count == 35


def test_meter_drops_buckets_older_than_the_span():
    clock = FakeClock(start=1000.5)
    m = MeterView(clock.now, time_span_s=10)
    m.mark_event(10)  # second 1000
    clock.advance(10.0)  # now 1010: seconds 1000..1009 are the span
    assert m.rate == pytest.approx(1.0)
    clock.advance(1.0)  # now 1011: second 1000 has left the span
    assert m.rate == 0.0
    assert m.count == 10


def test_meter_reuses_a_ring_slot_without_carrying_old_events():
    clock = FakeClock(start=1000.0)
    m = MeterView(clock.now, time_span_s=2)  # 3 slots: seconds 1000 and 1003 share one
    m.mark_event(7)
    clock.advance(3.0)
    m.mark_event(1)
    clock.advance(1.0)
    assert m.rate == pytest.approx(1 / 2)
    assert m.count == 8


def test_meter_rate_is_steady_for_a_steady_stream():
    clock = FakeClock(start=0.0)
    m = MeterView(clock.now, time_span_s=60)
    for _ in range(120):
        for _ in range(4):
            m.mark_event()
            clock.advance(0.25)
    assert m.rate == pytest.approx(4.0)


def test_meter_time_span_must_be_positive():
    with pytest.raises(ValueError, match="at least 1 s"):
        MeterView(lambda: 0.0, time_span_s=0)


def test_kind_of_names_each_type():
    assert [kind_of(m) for m in (Counter(), Gauge(lambda: 1), Histogram(), MeterView(lambda: 0.0))] == [
        "counter",
        "gauge",
        "histogram",
        "meter",
    ]
    assert isinstance(MeterView(lambda: 0.0), Meter)
    with pytest.raises(TypeError):
        kind_of(object())
