"""Request and trace ids: where they come from, how they are checked, where they are kept.

A request id names one RPC; a trace id names the whole journey of a request across services
(the caller's, the inference service's, the event in Kafka, the recorded row), so the caller
may send one. Both live in context variables while a call runs: the JSON log formatter
(studentperf.log_format) adds them to every line logged meanwhile, and the prediction core
copies the trace id into its events' headers (studentperf.envelope).

A trace id is 32 lowercase hex digits, not all zero: the W3C trace-context `trace-id`, so one
given in a `traceparent` header is taken as it is. Each event's Kafka record carries a
`traceparent` of its own too (`traceparent()`), so a consumer that speaks W3C trace context
(OpenTelemetry's Kafka instrumentations) joins the request's trace without knowing our header.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from contextvars import ContextVar

TRACEPARENT = "traceparent"
TRACE_ID_KEY = "x-trace-id"
REQUEST_ID_KEY = "x-request-id"

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
trace_id: ContextVar[str | None] = ContextVar("trace_id", default=None)

_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_ZERO = "0" * 32
# version "-" trace-id "-" parent-id "-" flags (https://www.w3.org/TR/trace-context/)
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def valid_trace_id(value: str) -> bool:
    return _TRACE_ID.fullmatch(value) is not None and value != _ZERO


def new_id() -> str:
    """A random 128-bit id as 32 hex digits, never all zero.

    From `random` (seeded from the system's randomness, reseeded in a forked child), not
    os.urandom: ids must be unique, not secret, and a system call per call costs more than
    the rest of a prediction where it is slow (sandboxes; see inference_service.stamps.new_uuid4s).
    """
    return f"{random.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    """A random 64-bit span id as 16 hex digits, never all zero (W3C `parent-id`)."""
    return f"{random.getrandbits(64) or 1:016x}"


def traceparent(trace_id: str) -> str:
    """A W3C `traceparent` for one record of the trace: version 00, the trace id, a new span
    id as its parent-id, flags 01 (sampled).

    The parent-id names the record's own send, as OpenTelemetry's producer instrumentation
    gives every message a span of its own: a consumer's span becomes its child, in the
    request's trace. That span is not exported (the service exports no spans; its trace id is
    in the logs and in `predictions.trace_id`). Sampled, because every event is recorded with
    its trace id: the caller's flags are not kept, and a caller's "not sampled" would make a
    parent-based consumer drop spans of a trace this service does keep.
    """
    return f"00-{trace_id}-{new_span_id()}-01"


def trace_id_from_traceparent(header: str) -> str | None:
    """The trace-id field of a W3C `traceparent`, or None when the header is malformed."""
    found = _TRACEPARENT.fullmatch(header.strip())
    if found is None or found.group(1) == "ff":  # version ff is forbidden
        return None
    value = found.group(2)
    return value if value != _ZERO else None


def trace_id_from_metadata(metadata: Iterable[tuple[str, str | bytes]]) -> tuple[str, str]:
    """The caller's trace id, else a new one; and why a new one was made when the caller
    sent one that is not usable ("" when nothing was wrong).

    `traceparent` wins over `x-trace-id` when both are sent: it is the standard.
    """
    given: dict[str, str] = {}
    for key, value in metadata:
        if key in (TRACEPARENT, TRACE_ID_KEY) and isinstance(value, str):
            given[key] = value
    if TRACEPARENT in given:
        found = trace_id_from_traceparent(given[TRACEPARENT])
        if found is not None:
            return found, ""
        return new_id(), f"malformed {TRACEPARENT} {given[TRACEPARENT][:80]!r}"
    if TRACE_ID_KEY in given:
        value = given[TRACE_ID_KEY].strip()
        if valid_trace_id(value):
            return value, ""
        return new_id(), f"malformed {TRACE_ID_KEY} {value[:80]!r} (want 32 lowercase hex digits)"
    return new_id(), ""
