import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from studentperf.v1 import prediction_service_pb2 as _prediction_service_pb2
from studentperf.v1 import student_pb2 as _student_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImportEvent(_message.Message):
    __slots__ = ("schema_version", "event_id", "occurred_at", "profile", "outcome", "source")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    profile: _student_pb2.StudentProfile
    outcome: _prediction_service_pb2.Outcome
    source: ImportSource
    def __init__(self, schema_version: _Optional[int] = ..., event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., profile: _Optional[_Union[_student_pb2.StudentProfile, _Mapping]] = ..., outcome: _Optional[_Union[_prediction_service_pb2.Outcome, _Mapping]] = ..., source: _Optional[_Union[ImportSource, _Mapping]] = ...) -> None: ...

class ImportSource(_message.Message):
    __slots__ = ("file_sha256", "line")
    FILE_SHA256_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    file_sha256: str
    line: int
    def __init__(self, file_sha256: _Optional[str] = ..., line: _Optional[int] = ...) -> None: ...
