"""The client's default in-flight window, from the limits the server reports."""

from __future__ import annotations

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.window import DEFAULT_MAX_IN_FLIGHT, window_from_limits


def test_window_is_the_smallest_limit_that_bounds_one_stream():
    limits = pb.Limits(max_outstanding_per_stream=1024, max_queue_length=4096, max_queued_per_stream=0)
    assert window_from_limits(limits) == 1024
    assert window_from_limits(pb.Limits(max_outstanding_per_stream=1024, max_queue_length=64)) == 64
    limits = pb.Limits(max_outstanding_per_stream=1024, max_queue_length=64, max_queued_per_stream=16)
    assert window_from_limits(limits) == 16


def test_a_zero_field_bounds_nothing():
    # an older server reports no max_outstanding_per_stream: its queue is the bound
    assert window_from_limits(pb.Limits(max_queue_length=4096)) == 4096
    assert window_from_limits(pb.Limits(max_queued_per_stream=8)) == 8


def test_no_limit_at_all_gives_the_default():
    assert window_from_limits(pb.Limits()) == DEFAULT_MAX_IN_FLIGHT == 1024
