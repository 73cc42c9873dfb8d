"""The request as it travels through the pipeline, and its identity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

# (stream id, request id): request ids are chosen by clients, unique per stream.
RequestKey = tuple[int, int]


@dataclass(frozen=True, slots=True)
class TensorData:
    """One named tensor of one item: raw little-endian C-order bytes."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    data: bytes


class Request(NamedTuple):
    """Immutable, and a NamedTuple rather than a frozen dataclass: one is built per
    request on the hot path, and this builds ~3x faster (0.27 vs 0.75 us, measured)."""

    stream: int
    request_id: int
    # After validation: the bytes of each model input, in the model's input order
    # (name, dtype and shape are the model's, so they need not travel).
    inputs: tuple[bytes, ...]
    received_at: float
    # Absolute time after which the answer is useless to the client
    # (received_at + its timeout); math.inf when it set none.
    deadline: float
    # The client asked for per-stage timing in its response.
    return_timing: bool = False
    # Unique per server run: an answer is matched to the request it was made for,
    # never to a later request that reuses the same id on the same stream.
    uid: int = 0

    @property
    def key(self) -> RequestKey:
        return (self.stream, self.request_id)


class Arrival(NamedTuple):
    """A request as the edge read it off the wire and checked against the model,
    before the session gives it its uid and deadline. NamedTuple: one per request."""

    request_id: int
    inputs: tuple[bytes | memoryview, ...]  # each model input's bytes (views where zero-copy), the model's order; () if refused
    timeout_s: float | None = None  # its own timeout; None: the stream's deadline only
    return_timing: bool = False
    refused: str | None = None  # why it cannot run (answered INVALID_ARGUMENT), else None
