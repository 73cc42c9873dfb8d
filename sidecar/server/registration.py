"""Registering a proto service's methods on the grpc.aio server, read off its
descriptor: unary methods with the generated parsers, bidirectional streams with
a lenient one. Both the GpuSidecar service and KServe's use it."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import grpc
from google.protobuf.message import DecodeError


class Unparsable:
    """A request-stream message that is not the message its method takes."""

    __slots__ = ("size", "error")

    def __init__(self, size: int, error: str) -> None:
        self.size = size
        self.error = error


def lenient(message_type: Any) -> Callable[[bytes], Any]:
    """A parser that gives Unparsable instead of raising. A frame that fails in
    gRPC's own deserializer ends the call with UNKNOWN and a traceback in the log,
    and every request read before it loses its answer; with this the reader sees
    it, and the service decides (refuse the stream, or answer it and read on)."""

    def parse(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except DecodeError as e:
            return Unparsable(len(data), str(e))

    return parse


def add_service(
    server: grpc.aio.Server, servicer: Any, module: ModuleType, service: str, registered_as: str | None = None
) -> None:
    """Registers every method of `module`'s `service` on `server`, each served by the
    servicer's method of the same name, under `registered_as` (default: the
    service's full name)."""
    descriptor = module.DESCRIPTOR.services_by_name[service]
    handlers = {}
    for method in descriptor.methods:
        request, response = getattr(module, method.input_type.name), getattr(module, method.output_type.name)
        handle = getattr(servicer, method.name)
        if method.client_streaming or method.server_streaming:
            assert method.client_streaming and method.server_streaming, f"{method.name}: only bidi streams are served"
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                handle, request_deserializer=lenient(request), response_serializer=response.SerializeToString
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                handle, request_deserializer=request.FromString, response_serializer=response.SerializeToString
            )
    name = registered_as or descriptor.full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)
