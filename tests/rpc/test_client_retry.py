"""The client's opt-in retry of RESOURCE_EXHAUSTED, against a real saturated server."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from sidecar.client import InferError, SidecarClient
from sidecar.retry import RetryPolicy
from tests.rpc.helpers import run, serving

X = {"input": np.ones(16, np.float32)}
SMALL_QUEUE = dict(model_uri="mock:?base_ms=5&per_item_ms=0", max_batch_size=4, max_inflight_batches=1, max_queue_length=8)


def test_without_retry_the_overflow_is_refused():
    async def go():
        async with serving(**SMALL_QUEUE) as server:
            async with SidecarClient(server.address, max_in_flight=60) as client:  # no window: overflow on purpose
                results = await asyncio.gather(*[client.submit(X) for _ in range(60)], return_exceptions=True)
        refused = [r for r in results if isinstance(r, InferError)]
        assert refused and all(e.code is grpc.StatusCode.RESOURCE_EXHAUSTED for e in refused)
        assert client.counts["retried"] == 0

    run(go())


def test_with_retry_every_request_gets_through_and_every_attempt_is_counted():
    async def go():
        async with serving(**SMALL_QUEUE) as server:
            policy = RetryPolicy(max_attempts=50, initial_backoff_s=0.002, max_backoff_s=0.05)
            async with SidecarClient(server.address, retry=policy, max_in_flight=60) as client:
                results = await asyncio.wait_for(asyncio.gather(*[client.submit(X) for _ in range(60)]), 30)
        assert all(out["output"][0] == 2.0 for out in results)
        assert client.counts["OK"] == 60
        assert client.counts["retried"] == client.counts["RESOURCE_EXHAUSTED"] > 0
        assert client.counts["sent"] == 60 + client.counts["retried"]

    run(go())


def test_retry_stops_at_the_requests_own_deadline():
    async def go():
        async with serving(**{**SMALL_QUEUE, "model_uri": "mock:?base_ms=200&per_item_ms=0"}) as server:
            policy = RetryPolicy(max_attempts=1000, initial_backoff_s=0.01, max_backoff_s=0.02)
            async with SidecarClient(server.address, retry=policy) as client:
                started = asyncio.get_running_loop().time()
                results = await asyncio.gather(*[client.submit(X, timeout_s=0.3) for _ in range(40)],
                                               return_exceptions=True)
                took = asyncio.get_running_loop().time() - started
        failed = [r for r in results if isinstance(r, InferError)]
        assert failed, "with a 200 ms backend and a tiny queue, some must run out of time"
        assert {e.code for e in failed} <= {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}
        assert took < 5.0  # bounded by the deadline, not by 1000 attempts

    run(go())


def test_policy_is_checked():
    with pytest.raises(ValueError):
        RetryPolicy(initial_backoff_s=0)
