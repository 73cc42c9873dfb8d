"""Admission actor: feeds the admission core and forwards what it decides."""

from __future__ import annotations

import logging
from typing import Any


from actors.base import SidecarActor
from actors.inbox import Inbox, Wake, handle_wake
from actors.messages import (
    AdmitRequests,
    Connect,
    Drain,
    FailRequests,
    GetSnapshot,
    Peers,
    QueueReleased,
    RequestsAdmitted,
    ServiceRate,
    Withdraw,
)
from sidecar.clock import Clock
from sidecar.core.admission import Admission, AdmissionLimits
from sidecar.core.status import Code, Failure

log = logging.getLogger(__name__)


class AdmissionActor(SidecarActor):

    def __init__(self, limits: AdmissionLimits, clock: Clock) -> None:
        super().__init__()
        self._core = Admission(limits)
        self._clock = clock
        self._peers: Peers | None = None
        self._to_batcher: Inbox | None = None
        self._to_session: Inbox | None = None

    def on_receive(self, message: Any) -> Any:
        match message:
            case Wake():
                handle_wake(message, self.on_receive)
            case AdmitRequests(requests):
                assert self._peers is not None and self._to_batcher is not None and self._to_session is not None, (
                    "Connect must come first"
                )
                try:
                    result = self._core.admit(requests, self._clock.now())
                except Exception:  # a bug must not leave requests unanswered
                    log.exception("admission: failed to admit %d request(s)", len(requests))
                    failure = Failure(Code.INTERNAL, "the sidecar failed to admit this request; it was not run")
                    self._to_session.tell(FailRequests(tuple((r, failure) for r in requests)))
                    return None
                if result.admitted is not None:
                    self._to_batcher.tell(RequestsAdmitted(result.admitted))
                if result.rejected:
                    self._to_session.tell(FailRequests(result.rejected))
            case Withdraw():
                assert self._to_batcher is not None, "Connect must come first"
                self._to_batcher.tell(message)  # in order with the requests it passed on
            case QueueReleased(by_stream):
                self._core.released(by_stream, self._clock.now())
            case ServiceRate(per_s):
                self._core.service_rate(per_s)
            case Drain():
                self._core.drain()
            case Connect(peers):
                self._peers = peers
                self._to_batcher, self._to_session = Inbox(peers.batcher), Inbox(peers.session)
            case GetSnapshot():
                return {"depth": self._core.depth, "draining": self._core.draining, "sizes": self._core.sizes()}
            case _:
                log.error("admission: unexpected message %r", message)
        return None
