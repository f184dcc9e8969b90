"""Server reflection as the ecosystem's tools ask for it: both protocol versions, method names.

grpcio-reflection (1.85) serves only `grpc.reflection.v1alpha`, and resolves a symbol through
protobuf's descriptor pool, whose upb backend finds messages, fields, enums and services but
not methods. ghz asks for `studentperf.v1.PredictionService.Predict` (the reflection protocol
allows a method's name) and failed with "Symbol not found"; grpcurl asks for the service and
worked. Two amendments, until grpcio-reflection has them (for v1: grpc/grpc#38576):

- a symbol `<service>.<method>` is answered with the service's file, as grpc-go and grpc-java
  do;
- the same servicer is served as `grpc.reflection.v1.ServerReflection` too. v1 is v1alpha with
  another package name (grpc-proto says so; every message and field number is the same), so
  one servicer speaks both on the wire, and a copy of v1alpha's descriptor under v1's package
  lets a client `describe` the v1 service it sees listed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha

V1ALPHA_SERVICE = reflection.SERVICE_NAME
V1_SERVICE = "grpc.reflection.v1.ServerReflection"
_METHOD = "ServerReflectionInfo"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


class _ReflectionServicer(reflection.aio.ReflectionServicer):  # type: ignore[misc]
    def _file_containing_symbol(
        self, request: v1alpha.ServerReflectionRequest, fully_qualified_name: str
    ) -> v1alpha.ServerReflectionResponse:
        answer: v1alpha.ServerReflectionResponse = super()._file_containing_symbol(
            request, fully_qualified_name
        )
        if answer.HasField("error_response"):
            service, _, method = fully_qualified_name.rpartition(".")
            try:
                found = self._pool.FindServiceByName(service)
            except KeyError:
                return answer
            if method in found.methods_by_name:
                answer = super()._file_containing_symbol(request, service)
        return answer


def _add_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    """v1alpha's file, renamed to v1's file and package, into the pool (once)."""
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    v1alpha.DESCRIPTOR.CopyToProto(proto)
    old, new = proto.package, "grpc.reflection.v1"
    proto.name, proto.package = _V1_FILE, new
    # v1alpha's file options name its own packages and mark it deprecated; these are v1's.
    proto.options.Clear()
    proto.options.java_package = "io.grpc.reflection.v1"
    proto.options.java_outer_classname = "ServerReflectionProto"
    proto.options.java_multiple_files = True
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(f".{old}.", f".{new}.")
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(f".{old}.", f".{new}.")
            method.output_type = method.output_type.replace(f".{old}.", f".{new}.")
    pool.AddSerializedFile(proto.SerializeToString())


def enable(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serves reflection, both versions, listing `service_names` and the two reflection
    services."""
    pool = descriptor_pool.Default()
    _add_v1_descriptor(pool)
    servicer = _ReflectionServicer((*service_names, V1ALPHA_SERVICE, V1_SERVICE), pool=pool)
    handlers: dict[str, Any] = {
        _METHOD: grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=v1alpha.ServerReflectionRequest.FromString,
            response_serializer=v1alpha.ServerReflectionResponse.SerializeToString,
        )
    }
    for name in (V1ALPHA_SERVICE, V1_SERVICE):
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
        server.add_registered_method_handlers(name, handlers)
