"""What both client flavours share: request building, deadlines, the retry bookkeeping and
putting chunked batch results back together."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import grpc

from studentperf.client.chunking import Chunk
from studentperf.client.errors import PartlyAnswered, ServiceError
from studentperf.client.inputs import StudentLike, as_student
from studentperf.client.retry import RetryPolicy
from studentperf.error_reasons import MAY_BE_RECORDED
from studentperf.v1 import prediction_service_pb2 as api


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """Passed to `on_retry` before each pause: which call failed how, and how long we wait."""

    method: str
    attempts_made: int
    code: grpc.StatusCode
    message: str
    pause_s: float


OnRetry = Callable[[RetryEvent], None]


class Deadline:
    """One call's time budget, shared by all its attempts and the pauses between them."""

    def __init__(self, timeout_s: float) -> None:
        if not timeout_s > 0:
            raise ValueError(f"a deadline must be positive, got {timeout_s}")
        self._end = time.monotonic() + timeout_s

    def remaining_s(self) -> float:
        return self._end - time.monotonic()


def predict_request(
    student: StudentLike | api.PredictRequest, top_factors: int, term: str = ""
) -> api.PredictRequest:
    """`term` "" leaves the choice to the server (its current term)."""
    if isinstance(student, api.PredictRequest):
        return student
    return api.PredictRequest(student=as_student(student), top_factors=top_factors, term=term)


def batch_request(
    students: Sequence[StudentLike] | api.BatchPredictRequest, top_factors: int, term: str = ""
) -> api.BatchPredictRequest:
    if isinstance(students, api.BatchPredictRequest):
        return students
    return api.BatchPredictRequest(
        students=[as_student(s) for s in students], top_factors=top_factors, term=term
    )


def outcomes_request(
    outcomes: Sequence[api.Outcome] | api.RecordOutcomesRequest,
) -> api.RecordOutcomesRequest:
    if isinstance(outcomes, api.RecordOutcomesRequest):
        return outcomes
    return api.RecordOutcomesRequest(outcomes=outcomes)


# Calls whose retry makes new records beside those a failed try may have left: every
# prediction gets a fresh id. (RecordOutcomes records the same scores again; EraseStudent
# removes nothing more: both safe.)
NOT_IDEMPOTENT: Final = frozenset({"Predict", "BatchPredict"})


class RetryState:
    """The attempts of one call: decides, after a failure, whether and how long to pause."""

    def __init__(
        self, method: str, policy: RetryPolicy, deadline: Deadline, on_retry: OnRetry | None
    ) -> None:
        self.method = method
        self.attempts = 0
        self._policy = policy
        self._deadline = deadline
        self._on_retry = on_retry

    def _would_record_twice(self, failed: ServiceError) -> bool:
        return (
            failed.reason == MAY_BE_RECORDED
            and self.method in NOT_IDEMPOTENT
            and not self._policy.retry_may_be_recorded
        )

    def next_timeout_s(self) -> float:
        """The time left for the attempt about to start."""
        self.attempts += 1
        return max(self._deadline.remaining_s(), 0.001)

    def pause_or_raise(self, error: grpc.RpcError) -> float:
        """The pause before the next attempt; raises ServiceError when there is to be none."""
        code: grpc.StatusCode = error.code()
        failed = ServiceError.from_rpc_error(error, self.attempts)
        pause = self._policy.pause_before_retry(code, self.attempts, self._deadline.remaining_s())
        if pause is None or self._would_record_twice(failed):
            raise failed from None
        if self._on_retry is not None:
            message: str = error.details() or ""
            self._on_retry(RetryEvent(self.method, self.attempts, code, message, pause))
        return pause


_STUDENT_INDEX = re.compile(r"\bstudents\[(\d+)\]")


def shift_item_paths(
    results: Sequence[api.BatchPredictResult], offset: int
) -> list[api.BatchPredictResult]:
    """A chunk's results with `students[i]` in its errors renamed to `students[offset + i]`, so
    paths name the student's place in the caller's whole list, not in its chunk."""
    if offset:

        def shift(text: str) -> str:
            return _STUDENT_INDEX.sub(lambda m: f"students[{int(m.group(1)) + offset}]", text)

        for result in results:
            if result.HasField("error"):
                result.error.message = shift(result.error.message)
                for violation in result.error.bad_request.field_violations:
                    violation.field = shift(violation.field)
    return list(results)


def chunk_results(
    results: Sequence[api.BatchPredictResult], chunk: Chunk
) -> list[api.BatchPredictResult]:
    """One chunk's answer, its error paths numbered as in the whole list; a server that answered
    another number of results than students (one per student, in order, is the contract) would
    shift every later answer onto the wrong student, so that is refused."""
    if len(results) != len(chunk.students):
        raise ServiceError(
            grpc.StatusCode.UNKNOWN,
            f"the server answered {len(results)} results for {len(chunk.students)} students",
        )
    return shift_item_paths(results, chunk.start)


def place(
    parts: Sequence[Chunk],
    answers: Sequence[list[api.BatchPredictResult] | None],
    students: int,
) -> list[api.BatchPredictResult | None]:
    """Each chunk's answer in its students' places; None where a chunk got none."""
    results: list[api.BatchPredictResult | None] = [None] * students
    for part, answer in zip(parts, answers, strict=True):
        if answer is not None:
            results[part.start : part.start + len(answer)] = answer
    return results


def all_answered(
    results: list[api.BatchPredictResult | None], failures: Sequence[ServiceError]
) -> list[api.BatchPredictResult]:
    """predict_many's answer: every result, or PartlyAnswered (the first failure) with those
    that came."""
    if failures:
        raise PartlyAnswered(failures[0], results) from failures[0]
    return [result for result in results if result is not None]
