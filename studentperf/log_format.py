"""Log lines as JSON objects, one per line, for log collectors; or as text, for people.

A JSON line has `time` (UTC, ISO 8601 with milliseconds), `level`, `logger`, `message`, then
`request_id` and `trace_id` when a call set them (studentperf.tracing), and `exc_info` (the
formatted traceback) when an exception was logged. Written by hand: it is this small.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from studentperf import tracing

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = tracing.request_id.get()
        if request_id is not None:
            line["request_id"] = request_id
        trace_id = tracing.trace_id.get()
        if trace_id is not None:
            line["trace_id"] = trace_id
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        # default=str: a message argument that is not JSON is still logged, as its text.
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The human-readable line, with the call's ids appended when set."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = [
            f"{name}={value}"
            for name, value in (
                ("request_id", tracing.request_id.get()),
                ("trace_id", tracing.trace_id.get()),
            )
            if value is not None
        ]
        return f"{text} [{' '.join(ids)}]" if ids else text
