"""KServe v2 over gRPC: `inference.GRPCInferenceService` beside GpuSidecar on the
same server (docs/kserve.md).

The messages are sidecar/api/kserve/v2/inference.proto's, wire-compatible with
KServe's and Triton's; the handlers are registered under the name clients call.
Unary errors are gRPC statuses (RESOURCE_EXHAUSTED carries RetryInfo in
grpc-status-details-bin, as google.rpc rich errors do); on ModelStreamInfer an
error answers its own request in `error_message` and the stream goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import json_format

from sidecar.api.kserve.v2 import inference_pb2 as kpb
from sidecar.core.kserve_tensors import KTensor
from sidecar.core.quote import quote
from sidecar.core.status import Code, Failure
from sidecar.core.stream import Phase
from sidecar.core.tensors import InvalidTensors
from sidecar.kserve import views
from sidecar.kserve.calls import DRAINING, LOADING, Call, count_refused, infer_once
from sidecar.kserve.types import KRequest, KResult, Model
from sidecar.kserve.values import has_contents, raw_from_values, typed_contents
from sidecar.rpc.convert import to_status
from sidecar.server.ingress import Ingress
from sidecar.server.registration import Unparsable, add_service
from sidecar.server.servicer import stop_reading

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
_GRPC_CODES = {c.value[0]: c for c in grpc.StatusCode}
# A request's own `timeout` parameter is in microseconds, as Triton reads it.
TIMEOUT_PARAMETER = "timeout"


class KServeGrpcServicer:
    """Needs the server's ingress; `model` is set once the backend has loaded, and
    `ready` and `statistics` are the server's (readiness, a model's statistics)."""

    def __init__(
        self, ingress: Ingress, ready: Callable[[], bool], statistics: Callable[[Model], Awaitable[dict[str, Any]]]
    ) -> None:
        self._ingress = ingress
        self._ready = ready
        self._statistics = statistics
        self.model: Model | None = None

    # ---- health and metadata ------------------------------------------------------------

    async def ServerLive(self, request: kpb.ServerLiveRequest, context: Any) -> kpb.ServerLiveResponse:
        return kpb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: kpb.ServerReadyRequest, context: Any) -> kpb.ServerReadyResponse:
        return kpb.ServerReadyResponse(ready=self._ready())

    async def ModelReady(self, request: kpb.ModelReadyRequest, context: Any) -> kpb.ModelReadyResponse:
        model = self.model
        known = model is not None and model.resolve(request.name, request.version) is None
        return kpb.ModelReadyResponse(ready=known and self._ready())

    async def ServerMetadata(self, request: kpb.ServerMetadataRequest, context: Any) -> kpb.ServerMetadataResponse:
        return json_format.ParseDict(views.server_metadata(), kpb.ServerMetadataResponse())

    async def ModelMetadata(self, request: kpb.ModelMetadataRequest, context: Any) -> kpb.ModelMetadataResponse:
        model = await self._model(request.name, request.version, context)
        return json_format.ParseDict(views.model_metadata(model), kpb.ModelMetadataResponse())

    async def ModelConfig(self, request: kpb.ModelConfigRequest, context: Any) -> kpb.ModelConfigResponse:
        model = await self._model(request.name, request.version, context)
        return kpb.ModelConfigResponse(config=json_format.ParseDict(views.model_config(model), kpb.ModelConfig()))

    async def ModelStatistics(self, request: kpb.ModelStatisticsRequest, context: Any) -> kpb.ModelStatisticsResponse:
        if not request.name and self.model is not None:  # all models: the one
            model = self.model
        else:
            model = await self._model(request.name, request.version, context)
        stats = await self._statistics(model)
        return kpb.ModelStatisticsResponse(model_stats=[json_format.ParseDict(stats, kpb.ModelStatistics())])

    async def _model(self, name: str, version: str, context: Any) -> Model:
        model = self.model
        if model is None:
            await _abort(context, LOADING)
        assert model is not None
        failure = model.resolve(name, version)
        if failure is not None:
            await _abort(context, failure)
        return model

    # ---- inference ----------------------------------------------------------------------

    async def ModelInfer(self, request: kpb.ModelInferRequest, context: Any) -> kpb.ModelInferResponse:
        try:
            k = to_request(request)
        except InvalidTensors as e:
            count_refused(self._ingress, "grpc", "invalid")
            await _abort(context, Failure(Code.INVALID_ARGUMENT, _about(request.id, e)))
        result = await infer_once(self._ingress, self.model, k, "grpc", context.time_remaining())
        if result.failure is not None:
            await _abort(context, result.failure)
        return to_response(result, self.model)

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[Any], context: Any) -> None:
        model = self.model
        if model is None:
            await _abort(context, LOADING)
        assert model is not None
        ingress = self._ingress
        stream = ingress.open_stream(context.time_remaining())
        if stream is None:
            await _abort(context, DRAINING)
        assert stream is not None
        call = Call(ingress, stream, model, "grpc", early=False)
        reader = asyncio.ensure_future(self._read(request_iterator, call))
        reason = "client went away"
        try:
            while ready := await call.results():
                for i, (_, result, parts) in enumerate(ready):
                    try:
                        await context.write(_stream_response(result, model))
                    except BaseException as e:
                        for _, _, rest in ready[i:]:
                            call.undelivered(rest)
                        if isinstance(e, asyncio.CancelledError):
                            raise
                        log.debug("kserve: write failed on stream %d: %r", stream.id, e)
                        return
                    call.delivered(parts)
            reason = "stream ended"
        finally:
            reader.cancel()
            call.close()
            ingress.close_stream(stream, reason)
        end = stream.life.end_status()
        if end is not None:
            context.set_code(_GRPC_CODES[int(end.code)])
            context.set_details(end.message)

    async def _read(self, request_iterator: AsyncIterator[Any], call: Call) -> None:
        stream, ingress = call.stream, self._ingress
        life = stream.life
        iterator = request_iterator.__aiter__()
        frames = 0
        try:
            while True:
                while not call.may_read:
                    if life.phase is not Phase.OPEN:
                        return
                    stream.readable.clear()
                    await stream.readable.wait()
                try:
                    message = await iterator.__anext__()
                except StopAsyncIteration:
                    ingress.read_ended(stream)
                    return
                frames += 1
                if isinstance(message, Unparsable):
                    call.refuse("", f"message {frames} of this stream is not a ModelInferRequest "
                                    f"({message.size} bytes: {message.error})")
                    continue
                try:
                    request = to_request(message)
                except InvalidTensors as e:
                    call.refuse(message.id, _about(message.id, e))
                    continue
                call.send(request)
        except Exception as e:  # the call broke under the read; the writer finds out on its own
            log.debug("kserve: read failed on stream %d: %r", stream.id, e)
            if life.phase is Phase.OPEN:
                ingress.read_ended(stream)
        finally:
            await stop_reading(iterator)


def to_request(m: kpb.ModelInferRequest) -> KRequest:
    """A wire request as the front ends' common form; InvalidTensors if its tensors
    cannot even be read (raw and typed data mixed, raw entries miscounted)."""
    raw = m.raw_input_contents
    if raw and len(raw) != len(m.inputs):
        raise InvalidTensors(f"raw_input_contents has {len(raw)} entries for {len(m.inputs)} inputs")
    inputs = []
    for i, t in enumerate(m.inputs):
        shape = tuple(t.shape)
        if raw:
            if has_contents(t.contents):
                raise InvalidTensors(f"input {quote(t.name)}: has both contents and raw_input_contents")
            data = raw[i]
        else:
            values = typed_contents(t.contents, t.datatype)
            if values is None:
                raise InvalidTensors(
                    f"input {quote(t.name)}: no data (raw_input_contents, or contents for {quote(t.datatype)})"
                )
            data = raw_from_values(t.name, t.datatype, shape, values)
        inputs.append(KTensor(t.name, t.datatype, shape, data))
    timeout = m.parameters.get(TIMEOUT_PARAMETER)
    # 0, as in Triton, is no timeout of its own.
    timeout_s = timeout.int64_param / 1e6 if timeout is not None and timeout.HasField("int64_param") else None
    timeout_s = timeout_s or None
    return KRequest(m.model_name, m.model_version, m.id, inputs, [o.name for o in m.outputs], timeout_s)


def to_response(result: KResult, model: Model | None) -> kpb.ModelInferResponse:
    response = kpb.ModelInferResponse(id=result.id)
    if model is not None:
        response.model_name, response.model_version = model.name, model.version
    for t in result.outputs:
        response.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        response.raw_output_contents.append(t.data)
    return response


def _stream_response(result: KResult, model: Model) -> kpb.ModelStreamInferResponse:
    if result.failure is not None:
        f = result.failure
        return kpb.ModelStreamInferResponse(
            error_message=error_text(f),
            infer_response=kpb.ModelInferResponse(model_name=model.name, model_version=model.version, id=result.id),
        )
    return kpb.ModelStreamInferResponse(infer_response=to_response(result, model))


def error_text(failure: Failure) -> str:
    """A failure as one line: its code's name first, as Triton's messages have no code."""
    return f"[{failure.code.name}] {to_status(failure).message}"


def _about(request_id: str, e: InvalidTensors) -> str:
    return f"request {quote(request_id)}: {e}" if request_id else str(e)


async def _abort(context: Any, failure: Failure) -> None:
    """Ends a unary call with `failure` as a google.rpc.Status (RetryInfo included)."""
    status = to_status(failure)
    context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
    await context.abort(_GRPC_CODES[int(failure.code)], status.message)


def add_to_server(servicer: KServeGrpcServicer, server: grpc.aio.Server) -> None:
    """Registers every method of the proto's service under SERVICE, the name clients call."""
    add_service(server, servicer, kpb, "GRPCInferenceService", registered_as=SERVICE)


def method_path(name: str) -> str:
    """The path a client calls, e.g. /inference.GRPCInferenceService/ModelInfer."""
    return f"/{SERVICE}/{name}"
