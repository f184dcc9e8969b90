"""Bearer-token authentication and per-method permission, as a gRPC server interceptor.

Clients send `authorization: Bearer <token>` metadata. The token table has one client a line,
`<name> <token> <methods>`, where methods is `*` or a comma-separated list of method names
(`Predict,BatchPredict`); `#` starts a comment. Every method is its own grant: `EraseStudent`
is granted only by naming it, or by `*`. No token, or an unknown one:
UNAUTHENTICATED. A known client calling a method not granted to it: PERMISSION_DENIED.
The health service stays open, so load balancers and orchestrators can probe without a token;
reflection needs a valid token but no particular grant. Tokens are kept only as SHA-256
digests and never logged. Refused calls are counted in the service's metrics with their code
(they never reach the servicer, which counts the others). The check reads only the call's
metadata: a refused call's request is never decoded, nor waited for.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from inference_service.metrics import InferenceMetrics
from studentperf.config import ConfigError
from studentperf.erasure import ANONYMOUS, REQUESTED_BY_MAX_LENGTH, requested_by_is_valid

log = logging.getLogger(__name__)

OPEN_SERVICES = frozenset({"grpc.health.v1.Health"})
ANY_CLIENT_SERVICES = frozenset(
    {"grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
)


@dataclass(frozen=True)
class Client:
    name: str
    methods: frozenset[str]  # method names, or {"*"}

    def may_call(self, method: str) -> bool:
        return "*" in self.methods or method in self.methods


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_token_table(text: str) -> dict[bytes, Client]:
    """Token digests to clients; raises ConfigError naming the bad line (not its token)."""
    clients: dict[bytes, Client] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3:
            raise ConfigError(
                f"STUDENTPERF_AUTH_TOKENS line {number}: expected '<name> <token> <methods>'"
            )
        name, token, methods = parts
        if not requested_by_is_valid(name):
            # The name is who asked for an erasure, in its event: the recorder would refuse
            # the event of a name it cannot record, and the student's rows would stay.
            raise ConfigError(
                f"STUDENTPERF_AUTH_TOKENS line {number}: a client name is printable, without "
                f"spaces, at most {REQUESTED_BY_MAX_LENGTH} characters"
            )
        if len(token) < 16:
            raise ConfigError(
                f"STUDENTPERF_AUTH_TOKENS line {number} ({name}): tokens need 16+ characters"
            )
        digest = _digest(token)
        if digest in clients:
            raise ConfigError(f"STUDENTPERF_AUTH_TOKENS line {number} ({name}): duplicate token")
        clients[digest] = Client(name, frozenset(m for m in methods.split(",") if m))
    return clients


def client_name(clients: Mapping[bytes, Client], metadata: Mapping[str, str]) -> str:
    """The name of the client whose bearer token the call carries (an audit's "who asked"),
    or ANONYMOUS when the server requires no token. Called after the interceptor let the call
    in, so with tokens on the token is known."""
    if not clients:
        return ANONYMOUS
    _, _, token = metadata.get("authorization", "").partition(" ")
    client = clients.get(_digest(token.strip()))
    return client.name if client is not None else ANONYMOUS


Denial = tuple[grpc.StatusCode, str]


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self, clients: Mapping[bytes, Client], metrics: InferenceMetrics | None = None
    ) -> None:
        self._clients = dict(clients)
        self._metrics = metrics

    def check(self, full_method: str, metadata: Mapping[str, str]) -> Denial | None:
        """None when the call may go ahead, else the status to refuse it with."""
        service, _, method = full_method.lstrip("/").partition("/")
        if service in OPEN_SERVICES:
            return None
        header = metadata.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return grpc.StatusCode.UNAUTHENTICATED, "a bearer token is required"
        client = self._clients.get(_digest(token.strip()))
        if client is None:
            return grpc.StatusCode.UNAUTHENTICATED, "unknown bearer token"
        if service not in ANY_CLIENT_SERVICES and not client.may_call(method):
            log.warning("denied %s to client %s", method, client.name)
            return grpc.StatusCode.PERMISSION_DENIED, f"client {client.name} may not call {method}"
        return None

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        started = time.perf_counter()
        metadata = {
            k: v for k, v in handler_call_details.invocation_metadata or () if isinstance(v, str)
        }
        handler = await continuation(handler_call_details)
        denial = self.check(handler_call_details.method, metadata)
        if denial is None or handler is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        return _refusing(handler, *denial, method, self._metrics, started)


def _refusing(
    handler: Any,
    code: grpc.StatusCode,
    message: str,
    method: str,
    metrics: InferenceMetrics | None,
    started: float,
) -> Any:
    """A handler that refuses the call (and counts it, timed from when the call came in)
    without reading its request: a caller without a token costs no decoding, and its request's
    bytes are not even waited for. Registered as request-streaming whatever the method is (the
    wire does not tell the two apart), so gRPC hands the call over before any message."""

    async def refuse(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if metrics is not None:
            metrics.rpc(method, code.name, time.perf_counter() - started)
        await context.abort(code, message)

    if handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(
            refuse, response_serializer=handler.response_serializer
        )
    return grpc.stream_unary_rpc_method_handler(
        refuse, response_serializer=handler.response_serializer
    )
