"""A bug inside an actor fails the requests it was handling, and nothing else."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np

from sidecar.client import InferError, SidecarClient
from sidecar.core.admission import Admission
from sidecar.core.batcher import Batcher
from tests.rpc.helpers import run, serving

X = {"input": np.ones(16, np.float32)}


def fails_once(monkeypatch, cls, method):
    original = getattr(cls, method)
    calls = []

    def patched(self, *args, **kwargs):
        if not calls:
            calls.append(1)
            raise RuntimeError(f"injected bug in {cls.__name__}.{method}")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, patched)


def check_first_batch_fails_internal_then_service_goes_on():
    async def go():
        async with serving(model_uri="mock:?base_ms=1") as server:
            async with SidecarClient(server.address) as client:
                first = await asyncio.wait_for(asyncio.gather(client.submit(X), return_exceptions=True), 10)
                assert isinstance(first[0], InferError) and first[0].code is grpc.StatusCode.INTERNAL
                later = await asyncio.wait_for(asyncio.gather(*[client.submit(X) for _ in range(10)]), 10)
                assert all(out["output"][0] == 2.0 for out in later)

    run(go())


def test_admission_bug_fails_those_requests_internal(monkeypatch):
    fails_once(monkeypatch, Admission, "admit")
    check_first_batch_fails_internal_then_service_goes_on()


def test_batcher_bug_fails_those_requests_internal(monkeypatch):
    original = Batcher.handle
    calls = []

    def handle(self, event, now):
        if type(event).__name__ == "RequestsAdmitted" and not calls:
            calls.append(1)
            raise RuntimeError("injected bug in Batcher.handle")
        return original(self, event, now)

    monkeypatch.setattr(Batcher, "handle", handle)
    check_first_batch_fails_internal_then_service_goes_on()


def test_session_bug_fails_that_message_internal(monkeypatch):
    from actors.session import SessionActor

    fails_once(monkeypatch, SessionActor, "_received")
    check_first_batch_fails_internal_then_service_goes_on()
