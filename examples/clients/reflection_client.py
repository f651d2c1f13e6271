"""Calls `runtime serve` from Python with no proto files at hand: the
services and messages come from the server's reflection API.

    python3 reflection_client.py URL API_KEY METHOD [REQUEST_JSON]

METHOD is a full method name (`orchestrator.v1.Executions/List`); the
request is JSON in the protobuf JSON mapping (field names as in the
protos, `{}` when left out). Prints the answer as JSON. With METHOD
`list` it prints the services the server offers (no key needed).

Needs `grpcio` and `grpcio-reflection` (pip).
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main() -> int:
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    url, key, method = sys.argv[1], sys.argv[2], sys.argv[3]
    request_json = sys.argv[4] if len(sys.argv) > 4 else "{}"
    target = url.removeprefix("http://")
    channel = grpc.insecure_channel(target)
    reflection = ProtoReflectionDescriptorDatabase(channel)
    if method == "list":
        print(json.dumps(sorted(reflection.get_services())))
        return 0
    pool = descriptor_pool.DescriptorPool(reflection)
    service_name, method_name = method.split("/", 1)
    service = pool.FindServiceByName(service_name)
    found = service.FindMethodByName(method_name)
    request_class = message_factory.GetMessageClass(found.input_type)
    response_class = message_factory.GetMessageClass(found.output_type)
    request = json_format.Parse(request_json, request_class())
    path = f"/{service_name}/{method_name}"
    metadata = [("authorization", f"Bearer {key}")]
    try:
        if found.server_streaming:
            call = channel.unary_stream(
                path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )
            answers = call(request, metadata=metadata)
        else:
            call = channel.unary_unary(
                path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )
            answers = [call(request, metadata=metadata)]
        for answer in answers:
            print(json_format.MessageToJson(answer, indent=None, preserving_proto_field_name=True))
    except grpc.RpcError as error:
        print(f"{error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
