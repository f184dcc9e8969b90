"""One table from domain errors to gRPC status codes, applied to every servicer method.

Invalid input -> INVALID_ARGUMENT with a google.rpc.BadRequest naming each field; events not
handed off, or outcomes not stored -> UNAVAILABLE; anything unexpected -> INTERNAL with a
generic message, the details in the log only (they may hold internals a caller has no business
seeing).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, NoReturn, ParamSpec, TypeAlias, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from inference_service.core import OutcomesUnavailable, PublishUnavailable
from inference_service.encoding import InvalidInput

log = logging.getLogger(__name__)

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


def bad_request(error: InvalidInput) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ]
    )


async def _abort_invalid(
    context: grpc.aio.ServicerContext[Any, Any], error: InvalidInput
) -> NoReturn:
    detail = any_pb2.Any()
    detail.Pack(bad_request(error))
    status = status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT, message=f"invalid request: {error}", details=[detail]
    )
    await context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("unreachable: abort_with_status raises")


def map_errors(
    method: Callable[Concatenate[S, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    """Turns the domain errors a servicer method raises into their gRPC status."""

    @functools.wraps(method)
    async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        context: Context = args[-1]
        try:
            return await method(self, *args, **kwargs)
        except InvalidInput as error:
            await _abort_invalid(context, error)
        except PublishUnavailable as error:
            log.warning("%s: %s", method.__name__, error)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"prediction not confirmed as recorded: {error}. It may still be recorded; "
                "a retry makes a new prediction",
            )
        except OutcomesUnavailable as error:
            log.warning("%s: %s", method.__name__, error)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"outcomes not stored: {error}. Nothing was stored; retrying is safe",
            )
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("%s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        raise AssertionError("unreachable: context.abort raises")

    return wrapper
