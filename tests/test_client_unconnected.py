"""A client with no stream (never connected, or closed) answers at once, never waits."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from sidecar.client import InferError, SidecarClient

X = {"input": np.ones(16, np.float32)}


def test_submit_before_connect_has_already_failed_unavailable():
    async def go():
        client = SidecarClient("127.0.0.1:1")
        assert not client.alive and client.dead_reason is not None
        future = client.submit(X)
        assert future.done()
        error = future.exception()
        assert isinstance(error, InferError) and error.code is grpc.StatusCode.UNAVAILABLE
        assert "connect() first" in error.message
        assert client.counts == {"unsent": 1}
        assert (await asyncio.wait_for(client.wait_dead(), 1)).code is grpc.StatusCode.UNAVAILABLE

    asyncio.run(go())


def test_closed_client_refuses_submits_and_close_is_idempotent():
    async def go():
        client = SidecarClient("127.0.0.1:1")
        await asyncio.wait_for(client.close(), 1)
        await asyncio.wait_for(client.close(), 1)
        with pytest.raises(RuntimeError):
            client.submit(X)
        with pytest.raises(RuntimeError):
            await client.connect()

    asyncio.run(go())


def test_window_must_be_positive():
    with pytest.raises(ValueError):
        SidecarClient("127.0.0.1:1", max_in_flight=0)


