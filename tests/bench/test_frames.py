"""The prebuilt-frames driver (sidecar/bench/frames.py) against the real server."""

from __future__ import annotations

import os

import pytest

from sidecar.bench.frames import measure
from tests.rpc.helpers import run, serving


@pytest.mark.parametrize("form", ["items", "batch"])
def test_every_item_of_every_frame_is_answered_ok(form):
    async def go():
        async with serving(model_uri="mock:?base_ms=0&per_item_ms=0") as server:
            figures = await measure(server.address, os.getpid(), form, items=8, messages=2, seconds=0.3)
        assert figures.errors == 0 and figures.items_per_s > 0
        assert figures.cpu_us_per_item > 0  # the server runs in this process here

    run(go())
