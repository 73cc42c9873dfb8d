"""Outcome codes and failures as the core sees them.

The codes are google.rpc.Code values; the RPC edge turns a `Failure` into a
google.rpc.Status. The core stays free of protobuf so it can be tested bare.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Code(IntEnum):
    OK = 0
    CANCELLED = 1
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5  # a KServe request for a model this sidecar does not serve
    RESOURCE_EXHAUSTED = 8
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16  # a KServe HTTP request without the configured bearer token


@dataclass(frozen=True, slots=True)
class Failure:
    code: Code
    message: str
    # Seconds the client should wait before retrying (google.rpc.RetryInfo).
    retry_after_s: float | None = None
