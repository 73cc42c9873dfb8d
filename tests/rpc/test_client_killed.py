"""Clients killed with SIGKILL while their work waits: the server withdraws it and carries on.

The server runs in this process on TCP; the doomed clients are real subprocesses,
so their connections end the way a crashed client's do (the kernel closes the
socket), with no gRPC cancel sent. The backend is held by a gate while they are
killed, so all of their work is still queued, and none of it may run afterwards.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from sidecar.backends.mock import MockBackend
from sidecar.client import SidecarClient
from sidecar.config import SidecarConfig
from sidecar.metrics.reporters.memory import InMemoryReporter
from sidecar.server.app import SidecarServer
from tests.rpc.helpers import Gate, eventually, run

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 30.0
KILLED_CLIENTS = 2
PER_KILLED = 50
X = np.arange(16, dtype=np.float32)

CLIENT_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import numpy as np
    from sidecar.client import SidecarClient

    async def main(address, n):
        client = SidecarClient(address)
        await client.connect()
        futures = [client.submit({"input": np.full(16, 7, np.float32)}) for _ in range(n)]
        await asyncio.sleep(0)  # let the sender task write them
        print("SENT", flush=True)
        await asyncio.Event().wait()  # until killed

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


class RecordingMock(MockBackend):
    """A mock that remembers the size of every batch it computed."""

    def __init__(self, model_uri: str, sleep) -> None:
        super().__init__(model_uri, sleep=sleep)
        self.sizes: list[int] = []

    def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        self.sizes.append(len(inputs["input"]))
        return super().infer(inputs)


async def read_line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    return (await asyncio.wait_for(proc.stdout.readline(), WAIT_S)).decode().strip()


def test_killed_clients_queued_work_is_withdrawn_and_other_streams_unaffected(tmp_path):
    script = tmp_path / "doomed_client.py"
    script.write_text(CLIENT_SCRIPT)

    async def go():
        gate = Gate()
        backend = RecordingMock("mock:?base_ms=5&per_item_ms=0", sleep=gate)
        memory = InMemoryReporter()
        config = SidecarConfig(
            endpoint="127.0.0.1:0", health_port=0, kserve_http_port=0, prometheus_port=0, metrics_reporters=(),
            max_batch_size=4, max_inflight_batches=1, max_queue_length=4096, max_queue_wait_s=WAIT_S,
        )
        server = SidecarServer(config, backends=[backend], reporters=[memory])
        await server.start()
        procs: list[asyncio.subprocess.Process] = []
        metric = memory.value
        try:
            async with SidecarClient(server.address) as survivor:
                # hold the backend: one batch of the survivor's inside, the rest of the work queues
                gate.open.clear()
                held = survivor.submit({"input": X})
                await eventually(lambda: backend.batches == 1, "the held batch to reach the backend")
                before = [survivor.submit({"input": X}) for _ in range(10)]

                for _ in range(KILLED_CLIENTS):
                    procs.append(
                        await asyncio.create_subprocess_exec(
                            sys.executable, str(script), server.address, str(PER_KILLED),
                            cwd=ROOT, stdout=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                        )
                    )
                for proc in procs:
                    assert await read_line(proc) == "SENT"
                sent = 1 + 10 + KILLED_CLIENTS * PER_KILLED
                await eventually(lambda: metric("gpuSidecar.requestsReceived").count == sent, "every request read")
                await eventually(lambda: metric("gpuSidecar.queueDepth").value == sent - 1, "every request queued")
                assert metric("gpuSidecar.requestsCancelled").count == 0

                for proc in procs:
                    proc.send_signal(signal.SIGKILL)
                for proc in procs:
                    assert await asyncio.wait_for(proc.wait(), WAIT_S) == -signal.SIGKILL

                # the server notices the dead connections and withdraws their queued work
                killed = KILLED_CLIENTS * PER_KILLED
                await eventually(lambda: metric("gpuSidecar.requestsCancelled").count == killed, "the withdrawal")
                await eventually(lambda: metric("gpuSidecar.queueDepth").value == 10, "only the survivor's queued")

                # the survivor carries on, before and after the kill
                after = [survivor.submit({"input": X}) for _ in range(10)]
                gate.open.set()
                results = await asyncio.wait_for(asyncio.gather(held, *before, *after), WAIT_S)
                for out in results:
                    np.testing.assert_array_equal(out["output"], X * 2)
            assert survivor.counts["OK"] == 21 and survivor.counts["lost"] == 0

            # metrics settle and reconcile
            await eventually(lambda: metric("gpuSidecar.inflightRequests").value == 0, "nothing in flight")
            await eventually(lambda: metric("gpuSidecar.queueDepth").value == 0, "an empty queue")
            received = metric("gpuSidecar.requestsReceived").count
            outcomes = {
                name: metric(f"gpuSidecar.{name}").count
                for name in ("requestsSucceeded", "requestsRejected", "requestsExpired", "requestsCancelled",
                             "requestsFailed", "requestsInvalid")
            }
            assert received == sent + 10 == sum(outcomes.values()), outcomes
            assert outcomes == {
                "requestsSucceeded": 21, "requestsRejected": 0, "requestsExpired": 0,
                "requestsCancelled": killed, "requestsFailed": 0, "requestsInvalid": 0,
            }
            # the withdrawn work was never computed: the backend saw only the survivor's 21
            assert sum(backend.sizes) == 21 < received
        finally:
            gate.open.set()
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            await server.stop()

    run(go())
