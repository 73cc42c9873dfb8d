"""What a Flink job sees when the sidecar did not answer a record with its outputs.

Two kinds, told apart by type so that a retry predicate needs no status codes:

    SidecarRetryableError  RESOURCE_EXHAUSTED (no room now) or UNAVAILABLE (no
                           sidecar now: restarting, draining, unreachable). A later
                           try may succeed; `retry_after_s` is the server's hint.
    SidecarPermanentError  everything else: a bad input, a failed model, a deadline
                           passed. The same record would fail the same way again.

Inference is a pure function of the inputs, so a retried record cannot be
answered twice in a way that matters: the first answer simply never arrived.
"""

from __future__ import annotations

import grpc

from sidecar.client import InferError

RETRYABLE_CODES = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE})


class SidecarError(Exception):
    """A record the sidecar did not answer with outputs. `code` is the gRPC status code's name."""

    def __init__(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s

    def __reduce__(self):  # Flink may pickle what failed a task; keep every field
        return (type(self), (self.code, self.message, self.retry_after_s))


class SidecarRetryableError(SidecarError):
    """No room or no sidecar right now; worth trying again after `retry_after_s` (or a backoff)."""


class SidecarPermanentError(SidecarError):
    """The sidecar refused or failed this record for a reason a retry would not change."""


def from_infer_error(error: InferError) -> SidecarError:
    kind = SidecarRetryableError if error.code in RETRYABLE_CODES else SidecarPermanentError
    return kind(error.code.name, error.message, error.retry_after_s)


def retryable_in(error: BaseException | None) -> SidecarRetryableError | None:
    """The retryable sidecar error that `error` is or was raised from, if any.

    Follows what Python reports as the cause (`__cause__`, else `__context__`
    unless `raise ... from None` hid it), and stops at a permanent error: code
    that turned a retryable error into a permanent one meant it."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, SidecarRetryableError):
            return error
        if isinstance(error, SidecarPermanentError):
            return None
        seen.add(id(error))
        error = error.__cause__ if error.__cause__ is not None or error.__suppress_context__ else error.__context__
    return None


def is_retryable(error: BaseException | None) -> bool:
    """For a Flink retry predicate: whether `error` is (or was raised from) a retryable sidecar error."""
    return retryable_in(error) is not None
