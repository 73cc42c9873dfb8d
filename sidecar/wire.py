"""Protobuf helpers both ends of the wire use: the client with nothing but the
stubs, grpc and numpy (it runs inside PyFlink workers), the server beside them."""

from __future__ import annotations

from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def retry_after_s(status: status_pb2.Status) -> float | None:
    """The RetryInfo delay a status carries, if any."""
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None
