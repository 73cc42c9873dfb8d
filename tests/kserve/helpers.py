"""Clients for the KServe front ends of a real server (tests/rpc/helpers.py starts it):
plain HTTP through aiohttp, gRPC through the sidecar's own wire-compatible
messages, and a server on a thread of its own for blocking clients (tritonclient)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc

from sidecar.api.kserve.v2 import inference_pb2 as kpb
from sidecar.kserve.grpc_service import method_path
from sidecar.server.app import SidecarServer
from tests.rpc.helpers import WAIT_S, serving

# The body Flink's Triton provider (flink-model-triton) posts for one record of an
# ARRAY<FLOAT> column named `input` and an output column `output`: one input, the
# column names upper-cased, shape [1, n], flat data, no parameters (so JSON back).
FLINK_CONTENT_TYPE = "application/json; charset=utf-8"


def flink_body(values: list[float], input_name: str = "INPUT", output_name: str = "OUTPUT") -> dict[str, Any]:
    return {
        "inputs": [{"name": input_name, "datatype": "FP32", "shape": [1, len(values)], "data": values}],
        "outputs": [{"name": output_name}],
    }


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def http(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> HttpAnswer:
    """One request to the KServe HTTP front end; the body is sent as given."""
    timeout = aiohttp.ClientTimeout(total=WAIT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.request(method, f"http://127.0.0.1:{port}{path}", data=body, headers=headers) as r:
            return HttpAnswer(r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read())


async def post_json(port: int, path: str, doc: Any, headers: dict[str, str] | None = None) -> HttpAnswer:
    return await http(port, "POST", path, json.dumps(doc).encode(), {"Content-Type": "application/json", **(headers or {})})


class KServeGrpc:
    """The GRPCInferenceService methods as callables on a channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        service = kpb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
        for m in service.methods:
            request, response = getattr(kpb, m.input_type.name), getattr(kpb, m.output_type.name)
            make = channel.stream_stream if m.client_streaming else channel.unary_unary
            setattr(self, m.name, make(
                method_path(m.name), request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
            ))


def infer_request(model: str, arrays: dict[str, Any], request_id: str = "", **fields: Any) -> kpb.ModelInferRequest:
    """A ModelInferRequest with raw contents, the way tritonclient sends one."""
    request = kpb.ModelInferRequest(model_name=model, id=request_id, **fields)
    for name, array in arrays.items():
        request.inputs.add(name=name, datatype=_DATATYPE[array.dtype.name], shape=array.shape)
        request.raw_input_contents.append(array.tobytes())
    return request


_DATATYPE = {"float32": "FP32", "float64": "FP64", "int32": "INT32", "int64": "INT64", "bool": "BOOL", "float16": "FP16"}


class ServerThread:
    """A real server on an event loop of its own thread, for blocking clients."""

    def __init__(self, **overrides: Any) -> None:
        self._overrides = overrides
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-server-loop", daemon=True)
        self._stop: asyncio.Event | None = None
        self._done: Any = None
        self.server: SidecarServer | None = None

    def __enter__(self) -> SidecarServer:
        self._thread.start()
        started: Any = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        self._done = started
        deadline_ready = asyncio.run_coroutine_threadsafe(self._wait_started(), self._loop)
        deadline_ready.result(WAIT_S)
        assert self.server is not None
        return self.server

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with serving(**self._overrides) as server:
            self.server = server
            await self._stop.wait()

    async def _wait_started(self) -> None:
        while self.server is None:
            if self._done.done():
                self._done.result()  # raises what start raised
            await asyncio.sleep(0.01)

    def call(self, coro: Any) -> Any:
        """Runs a coroutine on the server's loop (e.g. reading its counts)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(WAIT_S)

    def __exit__(self, *exc: Any) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        with contextlib.suppress(Exception):
            self._done.result(WAIT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(WAIT_S)
        self._loop.close()


@contextlib.contextmanager
def server_thread(**overrides: Any) -> Iterator[tuple[SidecarServer, ServerThread]]:
    runner = ServerThread(**overrides)
    with runner as server:
        yield server, runner
