"""Runs in MLServer's own environment (.local/mlserver-venv), never in the project's .venv.

The serving benchmark calls it to get what ghz needs to drive MLServer's V2 gRPC dataplane, and
to check one answer before timing. It imports only mlserver and grpc, which the project's
environment lacks on purpose (MLServer pins its own dependencies).

    python mlserver_client.py protoset OUT
        the dataplane's FileDescriptorSet (MLServer ships generated code, not the .proto file,
        and its server has no reflection), for ghz --protoset
    python mlserver_client.py request MODEL ROW_JSON OUT
        a serialized ModelInferRequest for one feature row ({"column": value}), as a pandas
        request: strings as BYTES tensors, numbers as FP64, each of shape [1]
    python mlserver_client.py infer ADDRESS REQUEST_FILE TIMEOUT_S
        sends the request once MLServer answers (retrying until TIMEOUT_S); prints the outputs
        as JSON {"name": [values]}
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc import dataplane_pb2_grpc as pb_grpc

SERVICE = "inference.GRPCInferenceService"


def protoset(out: Path) -> None:
    files = descriptor_pb2.FileDescriptorSet()
    pb.DESCRIPTOR.CopyToProto(files.file.add())
    out.write_bytes(files.SerializeToString())


def request(model: str, row: dict[str, Any], out: Path) -> None:
    message = pb.ModelInferRequest(model_name=model)
    message.parameters["content_type"].string_param = "pd"
    for name, value in row.items():
        tensor = message.inputs.add(name=name, shape=[1])
        if isinstance(value, str):
            tensor.datatype = "BYTES"
            tensor.parameters["content_type"].string_param = "str"
            tensor.contents.bytes_contents.append(value.encode())
        else:
            tensor.datatype = "FP64"
            tensor.contents.fp64_contents.append(float(value))
    out.write_bytes(message.SerializeToString())


def values(output: Any) -> list[Any]:
    contents = output.contents
    for field in ("fp64_contents", "fp32_contents", "int64_contents", "int_contents"):
        if getattr(contents, field):
            return list(getattr(contents, field))
    return [b.decode() for b in contents.bytes_contents]


def infer(address: str, request_file: Path, timeout_s: float) -> None:
    message = pb.ModelInferRequest.FromString(request_file.read_bytes())
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while True:
            try:
                answer = stub.ModelInfer(message, timeout=10)
                break
            except grpc.RpcError as error:
                if time.monotonic() > deadline:
                    raise SystemExit(f"MLServer at {address} did not answer: {error}") from error
                time.sleep(0.5)
    print(json.dumps({output.name: values(output) for output in answer.outputs}))


def main(argv: list[str]) -> None:
    match argv:
        case ["protoset", out]:
            protoset(Path(out))
        case ["request", model, row, out]:
            request(model, json.loads(row), Path(out))
        case ["infer", address, request_file, timeout_s]:
            infer(address, Path(request_file), float(timeout_s))
        case _:
            raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
