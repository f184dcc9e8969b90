"""The one exception the client raises for a failed call, with the server's field violations."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from studentperf.error_reasons import ERROR_DOMAIN
from studentperf.v1 import prediction_service_pb2 as api

# Where gRPC carries a google.rpc.Status with typed details (grpcio-status reads the same key).
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field, by its path in the request (e.g. "student.profile.age"), and its rule."""

    field: str
    description: str


class ServiceError(Exception):
    """A call that failed: its status code, the server's message and the bad fields, if any.

    `attempts` counts the tries made (more than 1 when UNAVAILABLE was retried). `reason` is
    the server's google.rpc.ErrorInfo reason, if it gave one (studentperf.error_reasons:
    MAY_BE_RECORDED says the call's predictions may be recorded though it failed).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        field_violations: tuple[FieldViolation, ...] = (),
        attempts: int = 1,
        reason: str = "",
    ) -> None:
        self.code = code
        self.message = message
        self.field_violations = field_violations
        self.attempts = attempts
        self.reason = reason
        text = f"{code.name}: {message}"
        unsaid = [f"{v.field}: {v.description}" for v in field_violations]
        unsaid = [violation for violation in unsaid if violation not in message]
        if unsaid:
            text += "; " + "; ".join(unsaid)
        super().__init__(text)

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError, attempts: int = 1) -> ServiceError:
        """Reads code, message and google.rpc.BadRequest details from a sync or aio error."""
        code: grpc.StatusCode = error.code()
        message: str = error.details() or ""
        # (key, value) pairs: grpc's sync Metadatum namedtuples, or grpc.aio's Metadata items.
        trailing: Iterable[object] = error.trailing_metadata() or ()
        details = _details(trailing)
        return cls(code, message, _field_violations(details), attempts, _reason(details))


class PartlyAnswered(ServiceError):
    """predict_many's failure: the first of its calls that failed (code, message, attempts), and
    in `results`, one per student in input order, the answers of the calls that succeeded (their
    predictions are recorded) and None for the students no answer came for."""

    def __init__(self, failed: ServiceError, results: list[api.BatchPredictResult | None]) -> None:
        super().__init__(failed.code, failed.message, failed.field_violations, failed.attempts)
        self.results = results

    @property
    def answered(self) -> int:
        return sum(result is not None for result in self.results)


def _details(trailing: Iterable[object]) -> list[any_pb2.Any]:
    """The typed details of the google.rpc.Status the server sent, if it sent one."""
    raw = next(
        (
            item[1]
            for item in trailing
            if isinstance(item, tuple) and len(item) == 2 and item[0] == _STATUS_DETAILS_KEY
        ),
        None,
    )
    if not isinstance(raw, bytes):
        return []
    return list(status_pb2.Status.FromString(raw).details)


def _field_violations(details: Iterable[any_pb2.Any]) -> tuple[FieldViolation, ...]:
    violations: list[FieldViolation] = []
    for detail in details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
    return tuple(violations)


def _reason(details: Iterable[any_pb2.Any]) -> str:
    for detail in details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
            return str(info.reason)
    return ""
