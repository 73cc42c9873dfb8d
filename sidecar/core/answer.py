"""An answer as the pipeline gives it: one request's outputs or its failure, and
the timing it asked for. The edge that owns a wire format turns it into that
format's response (sidecar/rpc/convert.py for gpu-sidecar's, sidecar/kserve/ for
KServe's); the actors never see one."""

from __future__ import annotations

from typing import NamedTuple

from sidecar.core.status import Failure


class Timing(NamedTuple):
    queue_wait_s: float
    compute_s: float
    batch_size: int


class Answer(NamedTuple):
    """NamedTuple: one is built per request on the hot path."""

    request_id: int
    outputs: tuple[bytes, ...] | None  # on success: each model output's bytes, the model's order
    failure: Failure | None = None  # on failure
    timing: Timing | None = None  # when the request asked for it (success only)
