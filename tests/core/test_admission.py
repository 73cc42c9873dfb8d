"""Admission accounting with explicit times."""

from __future__ import annotations

import pytest

from sidecar.core.admission import MIN_RETRY_AFTER_S, Admission, AdmissionLimits
from sidecar.core.status import Code
from tests.factories import request


def reqs(ids, at=0.0):
    return [request(i, at=at) for i in ids]


def test_admits_up_to_max_queue_length_and_rejects_rest_at_once():
    a = Admission(AdmissionLimits(max_queue_length=3, max_queue_wait_s=0.5))
    result = a.admit(reqs(range(5)), now=1.0)
    assert [r.request_id for r in result.admitted.requests] == [0, 1, 2]
    assert result.admitted.queue_deadline == pytest.approx(1.5)
    assert [(r.request_id, f.code) for r, f in result.rejected] == [
        (3, Code.RESOURCE_EXHAUSTED),
        (4, Code.RESOURCE_EXHAUSTED),
    ]
    assert a.depth == 3


def test_rejection_names_depth_limit_and_carries_retry_hint():
    a = Admission(AdmissionLimits(max_queue_length=2, max_queue_wait_s=0.5))
    a.admit(reqs([1, 2]), now=0.0)
    (_, failure), = a.admit(reqs([3]), now=0.0).rejected
    assert "queue is full: 2 queued, limit 2" in failure.message
    assert failure.retry_after_s == pytest.approx(0.5)  # no drain rate known yet: the max wait


def test_retry_hint_follows_drain_rate():
    a = Admission(AdmissionLimits(max_queue_length=100, max_queue_wait_s=5.0))
    a.admit(reqs(range(100)), now=0.0)
    a.released([(1, 10)], now=1.0)  # the first report starts the clock
    a.admit(reqs(range(100, 110)), now=1.0)
    a.released([(1, 50)], now=2.0)  # 50 per second
    a.admit(reqs(range(110, 160)), now=2.0)
    (_, failure), = a.admit(reqs([999]), now=2.0).rejected
    assert failure.retry_after_s == pytest.approx(100 / 50)


def test_released_frees_room_and_requeued_take_it_back():
    a = Admission(AdmissionLimits(max_queue_length=2, max_queue_wait_s=0.5))
    a.admit(reqs([1, 2]), now=0.0)
    a.released([(1, 2)], now=0.1)
    assert a.depth == 0
    a.released([(1, -1)], now=0.2)  # one came back (its executor was replaced)
    assert a.depth == 1
    assert len(a.admit(reqs([3, 4]), now=0.3).admitted.requests) == 1


def test_per_stream_limit_stops_one_stream_filling_the_queue():
    a = Admission(AdmissionLimits(max_queue_length=10, max_queue_wait_s=0.5, max_per_stream=3))
    hot = a.admit([request(i, stream=1) for i in range(5)], now=0.0)
    assert len(hot.admitted.requests) == 3
    (_, failure), *_ = hot.rejected
    assert failure.code is Code.RESOURCE_EXHAUSTED
    assert "this stream has 3 requests queued, per-stream limit 3" in failure.message
    assert failure.retry_after_s is not None
    cold = a.admit([request(i, stream=2) for i in range(3)], now=0.0)
    assert len(cold.admitted.requests) == 3 and a.depth == 6


def test_draining_refuses_everything_unavailable():
    a = Admission(AdmissionLimits(max_queue_length=10, max_queue_wait_s=0.5))
    a.drain()
    result = a.admit(reqs([1]), now=0.0)
    assert result.admitted is None
    assert result.rejected[0][1].code is Code.UNAVAILABLE
    assert a.depth == 0


def test_retry_hint_before_the_first_drain_sample_comes_from_the_service_rate():
    a = Admission(AdmissionLimits(max_queue_length=100, max_queue_wait_s=5.0))
    a.admit(reqs(range(100)), now=0.0)
    a.service_rate(50.0)  # the batcher: batch x executors / compute estimate
    (_, failure), = a.admit(reqs([999]), now=0.0).rejected
    assert failure.retry_after_s == pytest.approx(100 / 50)
    assert "retry after 2000.0 ms" in failure.message


def test_retry_hint_from_the_service_rate_stays_within_max_wait_and_the_minimum():
    a = Admission(AdmissionLimits(max_queue_length=10, max_queue_wait_s=0.5))
    a.admit(reqs(range(10)), now=0.0)
    a.service_rate(1.0)  # 10 s to drain: capped at the max wait
    assert a.admit(reqs([99]), now=0.0).rejected[0][1].retry_after_s == pytest.approx(0.5)
    a.service_rate(float("inf"))  # batches take no time at all: never below the minimum
    assert a.admit(reqs([99]), now=0.0).rejected[0][1].retry_after_s == pytest.approx(MIN_RETRY_AFTER_S)
    a.service_rate(0.0)  # nothing is up: the ceiling
    assert a.admit(reqs([99]), now=0.0).rejected[0][1].retry_after_s == pytest.approx(0.5)


def test_a_measured_drain_rate_wins_over_the_estimate():
    a = Admission(AdmissionLimits(max_queue_length=100, max_queue_wait_s=5.0))
    a.service_rate(1000.0)
    a.admit(reqs(range(100)), now=0.0)
    a.released([(1, 10)], now=1.0)
    a.admit(reqs(range(100, 110)), now=1.0)
    a.released([(1, 50)], now=2.0)  # measured: 50 per second
    a.admit(reqs(range(110, 160)), now=2.0)
    assert a.admit(reqs([999]), now=2.0).rejected[0][1].retry_after_s == pytest.approx(100 / 50)
