from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Gender(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GENDER_UNSPECIFIED: _ClassVar[Gender]
    GENDER_FEMALE: _ClassVar[Gender]
    GENDER_MALE: _ClassVar[Gender]
    GENDER_OTHER: _ClassVar[Gender]

class ParentalEducation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARENTAL_EDUCATION_UNSPECIFIED: _ClassVar[ParentalEducation]
    PARENTAL_EDUCATION_HIGH_SCHOOL: _ClassVar[ParentalEducation]
    PARENTAL_EDUCATION_SOME_COLLEGE: _ClassVar[ParentalEducation]
    PARENTAL_EDUCATION_ASSOCIATE: _ClassVar[ParentalEducation]
    PARENTAL_EDUCATION_BACHELOR: _ClassVar[ParentalEducation]
    PARENTAL_EDUCATION_MASTER: _ClassVar[ParentalEducation]
    PARENTAL_EDUCATION_DOCTORATE: _ClassVar[ParentalEducation]
    PARENTAL_EDUCATION_SOME_HIGH_SCHOOL: _ClassVar[ParentalEducation]

class LunchProgram(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LUNCH_PROGRAM_UNSPECIFIED: _ClassVar[LunchProgram]
    LUNCH_PROGRAM_STANDARD: _ClassVar[LunchProgram]
    LUNCH_PROGRAM_FREE_OR_REDUCED: _ClassVar[LunchProgram]

class TestPreparation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TEST_PREPARATION_UNSPECIFIED: _ClassVar[TestPreparation]
    TEST_PREPARATION_NONE: _ClassVar[TestPreparation]
    TEST_PREPARATION_COMPLETED: _ClassVar[TestPreparation]
GENDER_UNSPECIFIED: Gender
GENDER_FEMALE: Gender
GENDER_MALE: Gender
GENDER_OTHER: Gender
PARENTAL_EDUCATION_UNSPECIFIED: ParentalEducation
PARENTAL_EDUCATION_HIGH_SCHOOL: ParentalEducation
PARENTAL_EDUCATION_SOME_COLLEGE: ParentalEducation
PARENTAL_EDUCATION_ASSOCIATE: ParentalEducation
PARENTAL_EDUCATION_BACHELOR: ParentalEducation
PARENTAL_EDUCATION_MASTER: ParentalEducation
PARENTAL_EDUCATION_DOCTORATE: ParentalEducation
PARENTAL_EDUCATION_SOME_HIGH_SCHOOL: ParentalEducation
LUNCH_PROGRAM_UNSPECIFIED: LunchProgram
LUNCH_PROGRAM_STANDARD: LunchProgram
LUNCH_PROGRAM_FREE_OR_REDUCED: LunchProgram
TEST_PREPARATION_UNSPECIFIED: TestPreparation
TEST_PREPARATION_NONE: TestPreparation
TEST_PREPARATION_COMPLETED: TestPreparation

class StudentProfile(_message.Message):
    __slots__ = ("student_id", "age", "gender", "parental_education", "lunch_program", "test_preparation")
    STUDENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGE_FIELD_NUMBER: _ClassVar[int]
    GENDER_FIELD_NUMBER: _ClassVar[int]
    PARENTAL_EDUCATION_FIELD_NUMBER: _ClassVar[int]
    LUNCH_PROGRAM_FIELD_NUMBER: _ClassVar[int]
    TEST_PREPARATION_FIELD_NUMBER: _ClassVar[int]
    student_id: str
    age: int
    gender: Gender
    parental_education: ParentalEducation
    lunch_program: LunchProgram
    test_preparation: TestPreparation
    def __init__(self, student_id: _Optional[str] = ..., age: _Optional[int] = ..., gender: _Optional[_Union[Gender, str]] = ..., parental_education: _Optional[_Union[ParentalEducation, str]] = ..., lunch_program: _Optional[_Union[LunchProgram, str]] = ..., test_preparation: _Optional[_Union[TestPreparation, str]] = ...) -> None: ...

class AcademicRecord(_message.Message):
    __slots__ = ("attendance_percentage", "study_hours_per_week", "previous_gpa", "assignments_completed")
    ATTENDANCE_PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    STUDY_HOURS_PER_WEEK_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_GPA_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    attendance_percentage: float
    study_hours_per_week: float
    previous_gpa: float
    assignments_completed: bool
    def __init__(self, attendance_percentage: _Optional[float] = ..., study_hours_per_week: _Optional[float] = ..., previous_gpa: _Optional[float] = ..., assignments_completed: _Optional[bool] = ...) -> None: ...

class Student(_message.Message):
    __slots__ = ("profile", "academic_record")
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    ACADEMIC_RECORD_FIELD_NUMBER: _ClassVar[int]
    profile: StudentProfile
    academic_record: AcademicRecord
    def __init__(self, profile: _Optional[_Union[StudentProfile, _Mapping]] = ..., academic_record: _Optional[_Union[AcademicRecord, _Mapping]] = ...) -> None: ...
