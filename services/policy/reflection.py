"""gRPC server reflection in both versions clients use: ``v1`` and ``v1alpha``.

grpcio-reflection ships ``grpc.reflection.v1alpha`` only, while current grpcurl, grpcui and
Postman ask for ``grpc.reflection.v1`` first. The v1 protocol is v1alpha's messages under a new
package name — the same fields with the same numbers, hence the same bytes on the wire — so the
v1 service here is the stock v1alpha servicer registered under v1's method path.
"""

from __future__ import annotations

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2 as messages

V1_SERVICE = "grpc.reflection.v1.ServerReflection"
V1ALPHA_SERVICE = reflection.SERVICE_NAME


def enable_reflection(server: grpc.aio.Server, service_names: tuple[str, ...]) -> None:
    """Offer reflection (v1 and v1alpha) of ``service_names`` and of themselves on ``server``."""
    servicer = reflection.aio.ReflectionServicer((*service_names, V1_SERVICE, V1ALPHA_SERVICE))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=messages.ServerReflectionRequest.FromString,
        response_serializer=messages.ServerReflectionResponse.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE, {"ServerReflectionInfo": v1}),))
