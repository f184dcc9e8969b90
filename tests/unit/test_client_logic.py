"""The client's pure logic: the retry policy, chunking, request building, error details."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from studentperf.client import RetryPolicy, ServiceError, StudentInput, erase
from studentperf.client._base import shift_item_paths
from studentperf.client._channel import _pem, is_local, plan_channel
from studentperf.client.chunking import batch_limit, chunks
from studentperf.client.inputs import enum_number
from studentperf.largest_items import LONGEST_TERM, LONGEST_TOP_FACTORS, largest_student
from studentperf.limits import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_REQUEST_BYTES,
    MAX_EXPLAINED_BATCH,
)
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import student_pb2
from studentperf.v1.student_pb2 import Student, StudentProfile

REPO = Path(__file__).resolve().parents[2]
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def test_backoff_caps_grow_exponentially_up_to_the_maximum() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, multiplier=2, max_backoff_s=0.5)
    assert [policy.backoff_cap_s(n) for n in range(1, 6)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.5, 0.5]
    )


def test_pauses_are_jittered_within_the_cap() -> None:
    policy = RetryPolicy(max_attempts=10, initial_backoff_s=0.1, max_backoff_s=2.0)
    rng = random.Random(7)
    pauses = [policy.pause_before_retry(UNAVAILABLE, 3, 60.0, rng) for _ in range(200)]
    assert all(p is not None and 0 <= p <= 0.4 for p in pauses)
    assert len({round(p or 0, 6) for p in pauses}) > 150  # spread out, not one value


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.CANCELLED,
    ],
)
def test_only_unavailable_is_retried(code: grpc.StatusCode) -> None:
    assert RetryPolicy().pause_before_retry(code, 1, 60.0) is None
    assert RetryPolicy().pause_before_retry(UNAVAILABLE, 1, 60.0) is not None


def test_attempts_are_bounded() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.pause_before_retry(UNAVAILABLE, 2, 60.0) is not None
    assert policy.pause_before_retry(UNAVAILABLE, 3, 60.0) is None
    assert RetryPolicy.none().pause_before_retry(UNAVAILABLE, 1, 60.0) is None


def test_no_pause_that_would_outlast_the_deadline() -> None:
    policy = RetryPolicy(max_attempts=100, initial_backoff_s=1.0, max_backoff_s=1.0)
    rng = random.Random(1)
    # With 10 ms left, only a pause shorter than that may be taken; most draws give up.
    pauses = [policy.pause_before_retry(UNAVAILABLE, 1, 0.01, rng) for _ in range(500)]
    assert all(p is None or p < 0.01 for p in pauses)
    assert pauses.count(None) > 450
    assert policy.pause_before_retry(UNAVAILABLE, 1, 0.0) is None


def test_a_bad_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="backoff"):
        RetryPolicy(initial_backoff_s=3, max_backoff_s=1)


def test_chunks_cover_the_list_in_order() -> None:
    items = [Student(profile=StudentProfile(student_id=f"s-{i}")) for i in range(23)]
    parts = chunks(items, 10)
    assert [(p.start, len(p.students)) for p in parts] == [(0, 10), (10, 10), (20, 3)]
    assert [x for p in parts for x in p.students] == items
    assert chunks([], 10) == []
    with pytest.raises(ValueError):
        chunks(items, 0)


def test_chunks_keep_each_request_within_the_servers_size_limit() -> None:
    """Students the server refuses one by one can be longer than the valid ones its limit is
    made for: 10,000 largest valid students fit one request, but not with every tenth id 200
    characters long."""
    full = [largest_student(f"{i:064d}") for i in range(DEFAULT_MAX_BATCH_SIZE)]
    assert [len(p.students) for p in chunks(full, DEFAULT_MAX_BATCH_SIZE)] == [10_000]
    long_ids = [
        largest_student("x" * 200) if i % 10 == 0 else student for i, student in enumerate(full)
    ]
    parts = chunks(long_ids, DEFAULT_MAX_BATCH_SIZE)
    assert len(parts) == 2 and [x for p in parts for x in p.students] == long_ids
    assert parts[1].start == len(parts[0].students)
    for part in parts:
        request = api.BatchPredictRequest(
            students=part.students, top_factors=LONGEST_TOP_FACTORS, term=LONGEST_TERM
        )
        assert request.ByteSize() <= DEFAULT_MAX_REQUEST_BYTES
    huge = largest_student("x" * 2_000_000)  # goes alone, to be refused alone
    lone = chunks([full[0], huge, full[1]], 10)
    assert [(p.start, len(p.students)) for p in lone] == [(0, 1), (1, 1), (2, 1)]


def test_batch_limit_defaults_to_the_servers_limits() -> None:
    assert batch_limit(0) == DEFAULT_MAX_BATCH_SIZE == 10_000
    assert batch_limit(3) == MAX_EXPLAINED_BATCH == 1_000
    assert batch_limit(0, 50) == 50
    with pytest.raises(ValueError, match="at most 1000"):
        batch_limit(3, 5000)
    with pytest.raises(ValueError):
        batch_limit(0, 0)


def test_the_proto_comments_state_the_same_limits() -> None:
    proto = (REPO / "proto/studentperf/v1/prediction_service.proto").read_text()
    assert f"{DEFAULT_MAX_BATCH_SIZE:,} by default" in proto
    assert f"at most {MAX_EXPLAINED_BATCH:,} students" in proto


def test_item_error_paths_are_renumbered_for_the_whole_list() -> None:
    error = api.ItemError(
        message="invalid student: students[1].profile.age: must be 10-100",
        bad_request=error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field="students[1].profile.age", description="must be 10-100"
                )
            ]
        ),
    )
    [shifted] = shift_item_paths([api.BatchPredictResult(error=error)], 2000)
    assert shifted.error.bad_request.field_violations[0].field == "students[2001].profile.age"
    assert "students[2001].profile.age" in shifted.error.message


def test_student_input_builds_the_message_leaving_missing_fields_unset() -> None:
    student = StudentInput(
        "s-1", age=16, gender="female", parental_education="PARENTAL_EDUCATION_MASTER",
        lunch_program=2, previous_gpa=3.2, assignments_completed=False,
    ).to_proto()  # fmt: skip
    assert student.profile.gender == student_pb2.GENDER_FEMALE
    assert student.profile.parental_education == student_pb2.PARENTAL_EDUCATION_MASTER
    assert student.profile.lunch_program == student_pb2.LUNCH_PROGRAM_FREE_OR_REDUCED
    assert student.academic_record.HasField("assignments_completed")
    assert not student.academic_record.assignments_completed
    assert not student.academic_record.HasField("attendance_percentage")
    assert student.profile.test_preparation == 0


def test_student_input_from_a_csv_row() -> None:
    row = {"student_id": " s-9 ", "age": "17", "gender": "", "previous_gpa": "2.5",
           "assignments_completed": "yes", "test_preparation": "completed"}  # fmt: skip
    student = StudentInput.from_row(row).to_proto()
    assert student.profile.student_id == "s-9" and student.profile.age == 17
    assert not student.profile.gender
    assert student.academic_record.previous_gpa == 2.5
    assert student.academic_record.assignments_completed
    with pytest.raises(ValueError, match="age"):
        StudentInput.from_row({"student_id": "s", "age": "old"})


def test_an_unknown_category_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="gender: unknown value 'robot'"):
        enum_number("gender", "robot")
    assert enum_number("lunch_program", None) == 0


def test_service_error_reads_the_bad_request_details() -> None:
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field="student.profile.age", description="must be 10-100"
                )
            ]
        )
    )
    status = status_pb2.Status(code=3, message="invalid request", details=[detail])

    class Failed(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.INVALID_ARGUMENT

        def details(self) -> str:
            return "invalid request"

        def trailing_metadata(self) -> Any:  # pairs, as grpc's errors give them
            return (("grpc-status-details-bin", status.SerializeToString()),)

    error = ServiceError.from_rpc_error(Failed(), attempts=1)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.description) for v in error.field_violations] == [
        ("student.profile.age", "must be 10-100")
    ]
    assert "student.profile.age: must be 10-100" in str(error)


def test_targets_on_this_machine() -> None:
    for target in ("127.0.0.1:50051", "localhost:1", "[::1]:50051", "dns:///localhost:5"):
        assert is_local(target), target
    for target in ("ipv4:127.0.0.1:1,127.0.0.2:1", "ipv6:[::1]:1", "127.0.0.1", "::1"):
        assert is_local(target), target
    for target in ("10.0.0.5:50051", "api.school.example:443", "[2001:db8::1]:50051"):
        assert not is_local(target), target
    # Names are not resolved, and a list is local only if every address is.
    for target in (
        "127.school-district.example:50051",
        "127.0.0.1.attacker.example:50051",
        "ipv4:127.0.0.1:50051,10.0.0.5:50051",
    ):
        assert not is_local(target), target


def test_a_token_is_never_sent_in_the_clear_to_another_machine() -> None:
    common = dict(root_certificates=None, client_certificate=None, client_key=None,
                  server_name=None, max_message_bytes=1 << 20)  # fmt: skip
    with pytest.raises(ValueError, match="in the clear"):
        plan_channel("api.school.example:50051", tls=False, token="t" * 20, **common)  # type: ignore[arg-type]
    local = plan_channel("127.0.0.1:50051", tls=False, token="t" * 20, **common)  # type: ignore[arg-type]
    assert local.metadata == (("authorization", "Bearer " + "t" * 20),)
    remote = plan_channel("api.school.example:50051", tls=True, token="t" * 20, **common)  # type: ignore[arg-type]
    assert remote.credentials is not None and remote.metadata == ()


def test_the_client_imports_none_of_the_services_or_the_data_stack() -> None:
    code = (
        "import sys, studentperf.client, studentperf.client.aio; "
        "print(' '.join(sorted(sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=REPO
    ).stdout.split()
    for heavy in ("inference_service", "recorder_service", "trainer", "pandas", "sklearn",
                  "numpy", "aiokafka", "asyncpg"):  # fmt: skip
        assert heavy not in loaded, heavy


def test_certificates_as_bytes_text_or_file(tmp_path: Path) -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    (tmp_path / "ca.pem").write_text(pem)
    for given in (pem.encode(), pem, tmp_path / "ca.pem", str(tmp_path / "ca.pem")):
        assert _pem(given) == pem.encode()
    with pytest.raises(FileNotFoundError):
        _pem(tmp_path / "missing.pem")


@pytest.mark.parametrize(
    ("argv", "token"),
    [
        (["s-1", "--target", "api.school.example:50051"], "t" * 24),  # in the clear
        (["s-1", "--cert", "/dev/null"], None),  # a certificate without its key
        (["s-1", "--ca", "/nonexistent/ca.pem"], None),
    ],
)
def test_the_erase_commands_refused_options_are_a_usage_error(
    argv: list[str],
    token: str | None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Exit 2, its docstring says; a traceback and exit 1 read as "refused or failed"."""
    monkeypatch.delenv("STUDENTPERF_TOKEN_FILE", raising=False)
    monkeypatch.delenv("STUDENTPERF_TOKEN", raising=False)
    if token:
        monkeypatch.setenv("STUDENTPERF_TOKEN", token)
    with pytest.raises(SystemExit) as stopped:
        erase.main(argv)
    assert stopped.value.code == 2
    assert "error:" in capsys.readouterr().err
