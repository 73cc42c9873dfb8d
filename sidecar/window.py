"""How many requests a client keeps in flight (sent, not yet answered) on one stream.

More than that wait in the client, not failed, and go out as answers come back:
so a client that submits 10,000 at once never overruns the server's queue. The
window is the smallest limit the server reports in GetModelInfo that bounds one
stream (a field left 0 bounds nothing); a server that cannot say (an old one, or
one still loading) gets DEFAULT_MAX_IN_FLIGHT, the server's own default
`sidecar.stream.max-outstanding`.
"""

from __future__ import annotations

from sidecar.api.v1 import gpu_sidecar_pb2 as pb

DEFAULT_MAX_IN_FLIGHT = 1024


def window_from_limits(limits: pb.Limits) -> int:
    caps = [
        cap
        for cap in (limits.max_outstanding_per_stream, limits.max_queue_length, limits.max_queued_per_stream)
        if cap > 0
    ]
    return min(caps, default=DEFAULT_MAX_IN_FLIGHT)
