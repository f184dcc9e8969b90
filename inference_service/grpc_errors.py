"""One table from domain errors to gRPC status codes, applied to every servicer method.

Invalid input -> INVALID_ARGUMENT with a google.rpc.BadRequest naming each field; events not
handed off, or a history not read -> UNAVAILABLE; an unknown student -> NOT_FOUND; anything
unexpected -> INTERNAL with a generic message, the details in the log only (they may hold
internals a caller has no business seeing).

The same wrapper gives each call its request id and trace id (studentperf.tracing: in the
log lines of the call, in its events' headers, echoed in the trailing metadata) and records
its duration and status code in the service's metrics. It is done here rather than in a
`grpc.aio.ServerInterceptor` because this wrapper already runs around every call and already
knows the status code each error becomes: an interceptor would add a coroutine hop per call and
have to recover the code from the context afterwards.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, NoReturn, ParamSpec, Protocol, TypeAlias, TypeVar, cast

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from inference_service.core import HistoryUnavailable, PublishUnavailable, StudentNotFound
from inference_service.encoding import InvalidInput
from inference_service.metrics import InferenceMetrics
from studentperf import tracing
from studentperf.error_reasons import ERROR_DOMAIN, MAY_BE_RECORDED

log = logging.getLogger(__name__)

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
P = ParamSpec("P")
R = TypeVar("R")


class Observed(Protocol):
    """A servicer whose calls are counted: its metrics, or None for none."""

    @property
    def metrics(self) -> InferenceMetrics | None: ...


S = TypeVar("S", bound=Observed)


def bad_request(error: InvalidInput) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ]
    )


async def _abort_invalid(context: Context, error: InvalidInput) -> NoReturn:
    await _abort_with_detail(
        context, code_pb2.INVALID_ARGUMENT, f"invalid request: {error}", bad_request(error)
    )


async def _abort_may_be_recorded(context: Context, message: str) -> NoReturn:
    """UNAVAILABLE, with the reason a client reads to know a retry may record twice."""
    reason = error_details_pb2.ErrorInfo(reason=MAY_BE_RECORDED, domain=ERROR_DOMAIN)
    await _abort_with_detail(context, code_pb2.UNAVAILABLE, message, reason)


async def _abort_with_detail(
    context: Context, code: int, message: str, detail: Message
) -> NoReturn:
    """Ends the call with `code` and a google.rpc.Status carrying `detail`, keeping the
    trailing metadata the call had set (an abort with metadata replaces it)."""
    packed = any_pb2.Any()
    packed.Pack(detail)
    found = rpc_status.to_status(status_pb2.Status(code=code, message=message, details=[packed]))
    trailing = (*found.trailing_metadata, *(context.trailing_metadata() or ()))
    await context.abort(found.code, found.details, trailing)
    raise AssertionError("unreachable: abort raises")


def map_errors(
    method: Callable[Concatenate[S, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    """Turns the domain errors a servicer method raises into their gRPC status."""

    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        context = cast(Context, args[-1])  # a servicer method's last argument
        started = time.perf_counter()
        code = "UNKNOWN"
        request_id = tracing.new_id()
        trace_id, problem = tracing.trace_id_from_metadata(context.invocation_metadata() or ())
        # Each call runs in a task of its own, so these are the call's alone.
        tracing.request_id.set(request_id)
        tracing.trace_id.set(trace_id)
        context.set_trailing_metadata(
            ((tracing.REQUEST_ID_KEY, request_id), (tracing.TRACE_ID_KEY, trace_id))
        )
        if problem:
            log.warning("%s: %s; using a new trace id", name, problem)
        try:
            answer = await method(self, *args, **kwargs)
            code = "OK"
            return answer
        except InvalidInput as error:
            code = "INVALID_ARGUMENT"
            await _abort_invalid(context, error)
        except PublishUnavailable as error:
            code = "UNAVAILABLE"
            log.warning("%s: %s", name, error)
            # A retry of outcomes records the same scores again, later: the same result.
            if name == "RecordOutcomes":
                what, retry = "outcomes", "a retry records the same scores again"
            elif name == "EraseStudent":
                what, retry = "erasure", "retrying is safe (erasing twice removes nothing more)"
            else:
                what, retry = "prediction", "a retry makes a new prediction"
            await _abort_may_be_recorded(
                context,
                f"{what} not confirmed as recorded: {error}. It may still be recorded; {retry}",
            )
        except HistoryUnavailable as error:
            code = "UNAVAILABLE"
            log.warning("%s: %s", name, error)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"history not read: {error}. Retrying is safe"
            )
        except StudentNotFound as error:
            code = "NOT_FOUND"
            await context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        except grpc.aio.AbortError:
            if code == "UNKNOWN":  # aborted by the method itself
                found = context.code()
                code = found.name if isinstance(found, grpc.StatusCode) else code
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"  # a deadline, a client gone, a stop out of grace
            raise
        except Exception:
            code = "INTERNAL"
            log.exception("%s failed", name)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        finally:
            metrics = self.metrics
            if metrics is not None:
                metrics.rpc(name, code, time.perf_counter() - started)
        raise AssertionError("unreachable: context.abort raises")

    return wrapper
