"""gRPC server reflection, as both grpc.reflection.v1 and v1alpha.

grpcio-reflection ships only v1alpha, while newer tools (grpcurl, Postman,
grpc-java's ProtoReflectionService clients) ask for v1 first. The two services'
messages are identical on the wire (v1 renamed the package, nothing else), so
the v1alpha servicer answers v1 too, registered under v1's name.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as alpha

V1_SERVICE = "grpc.reflection.v1.ServerReflection"
V1ALPHA_SERVICE = reflection.SERVICE_NAME


def enable_reflection(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    names = (*service_names, V1_SERVICE, V1ALPHA_SERVICE)
    servicer = reflection.aio.ReflectionServicer(names)
    for service in (V1_SERVICE, V1ALPHA_SERVICE):
        handlers = {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=alpha.ServerReflectionRequest.FromString,
                response_serializer=alpha.ServerReflectionResponse.SerializeToString,
            )
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
