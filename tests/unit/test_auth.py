from __future__ import annotations

import re
from typing import Any

import grpc
import pytest

from inference_service.auth import TokenAuthInterceptor, parse_token_table
from studentperf.config import ConfigError

TABLE = """
# name        token                      methods
school-a      aaaaaaaaaaaaaaaaaaaaaaaa   *
dashboard     dddddddddddddddddddddddd   GetModelInfo
"""
PREDICT = "/studentperf.v1.PredictionService/Predict"
INFO = "/studentperf.v1.PredictionService/GetModelInfo"


def check(method: str, header: str | None) -> tuple[grpc.StatusCode, str] | None:
    interceptor = TokenAuthInterceptor(parse_token_table(TABLE))
    return interceptor.check(method, {} if header is None else {"authorization": header})


def test_a_granted_client_passes() -> None:
    assert check(PREDICT, "Bearer aaaaaaaaaaaaaaaaaaaaaaaa") is None
    assert check(INFO, "bearer dddddddddddddddddddddddd") is None


def test_no_or_unknown_token_is_unauthenticated() -> None:
    assert check(PREDICT, None) == (grpc.StatusCode.UNAUTHENTICATED, "a bearer token is required")
    assert check(PREDICT, "Basic xyz") == (
        grpc.StatusCode.UNAUTHENTICATED,
        "a bearer token is required",
    )
    assert check(PREDICT, "Bearer nope-nope-nope-nope") == (
        grpc.StatusCode.UNAUTHENTICATED,
        "unknown bearer token",
    )


def test_a_method_not_granted_is_permission_denied() -> None:
    assert check(PREDICT, "Bearer dddddddddddddddddddddddd") == (
        grpc.StatusCode.PERMISSION_DENIED,
        "client dashboard may not call Predict",
    )


def test_health_is_open_and_reflection_needs_any_valid_token() -> None:
    assert check("/grpc.health.v1.Health/Check", None) is None
    reflection = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    assert check(reflection, None) is not None
    assert check(reflection, "Bearer dddddddddddddddddddddddd") is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("a b", "line 1: expected"),
        ("a short *", "16+ characters"),
        ("a xxxxxxxxxxxxxxxx *\nb xxxxxxxxxxxxxxxx *", "line 2 (b): duplicate token"),
    ],
)
def test_bad_tables_name_the_line_but_never_the_token(table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        parse_token_table(table)
    assert "xxxxxxxxxxxxxxxx" not in str(caught.value)


class Details:
    def __init__(self, method: str, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.method = method
        self.invocation_metadata = metadata


class AbortingContext:
    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise RuntimeError("aborted")


class Unreadable:
    """A request stream that fails the test if anything reads it."""

    def __aiter__(self) -> Unreadable:
        return self

    async def __anext__(self) -> bytes:
        raise AssertionError("the refused call's request was read")


def undecodable(data: bytes) -> object:
    raise AssertionError("the refused call's request was decoded")


async def test_a_refused_call_is_answered_without_reading_or_decoding_its_request() -> None:
    served: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(
        lambda request, context: request, request_deserializer=undecodable
    )

    async def continuation(details: Details) -> grpc.RpcMethodHandler[Any, Any]:
        return served

    interceptor = TokenAuthInterceptor(parse_token_table(TABLE))
    refused = await interceptor.intercept_service(continuation, Details(PREDICT))
    assert refused.request_deserializer is None
    assert refused.request_streaming  # handed over before the request's message came
    context = AbortingContext()
    with pytest.raises(RuntimeError, match="aborted"):
        await refused.stream_unary(Unreadable(), context)
    assert context.aborted == (grpc.StatusCode.UNAUTHENTICATED, "a bearer token is required")
    granted = await interceptor.intercept_service(
        continuation, Details(PREDICT, (("authorization", "Bearer aaaaaaaaaaaaaaaaaaaaaaaa"),))
    )
    assert granted is served
