"""Admission accounting with explicit times."""

from __future__ import annotations

import pytest

from sidecar.core.admission import Admission, AdmissionLimits
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
    a.released(0 + 10, now=1.0)
    a.admit(reqs(range(100, 110)), now=1.0)
    a.released(60, now=2.0)  # 50 per second
    a.admit(reqs(range(110, 160)), now=2.0)
    (_, failure), = a.admit(reqs([999]), now=2.0).rejected
    assert failure.retry_after_s == pytest.approx(100 / 50)


def test_released_frees_room_and_ignores_late_reports():
    a = Admission(AdmissionLimits(max_queue_length=2, max_queue_wait_s=0.5))
    a.admit(reqs([1, 2]), now=0.0)
    a.released(2, now=0.1)
    a.released(1, now=0.2)  # out of order: totals only grow
    assert a.depth == 0
    assert len(a.admit(reqs([3, 4]), now=0.3).admitted.requests) == 2


def test_draining_refuses_everything_unavailable():
    a = Admission(AdmissionLimits(max_queue_length=10, max_queue_wait_s=0.5))
    a.drain()
    result = a.admit(reqs([1]), now=0.0)
    assert result.admitted is None
    assert result.rejected[0][1].code is Code.UNAVAILABLE
    assert a.depth == 0
