"""The model's feature schema: one definition for the trainer and the inference service.

A trained pipeline takes a table whose columns are `FEATURE_COLUMNS`, in that order:
numbers as floats (NaN when missing), booleans as 0.0/1.0 (NaN when missing) and categories as
the lower-case names in `CATEGORIES` (None when missing). Missing values are imputed inside the
pipeline, never before it, so training and serving impute the same way.
"""

from __future__ import annotations

from typing import Final

NUMERIC_FEATURES: Final = (
    "age",
    "attendance_percentage",
    "study_hours_per_week",
    "previous_gpa",
    "assignments_completed",
)

# Category names match the proto enum value names with their prefix removed, lower-cased
# (PARENTAL_EDUCATION_SOME_COLLEGE -> "some_college"), so the mapping is mechanical. Levels are
# in their natural order, not the proto's numbers. A model trained before a level was added has
# no one-hot column for it and encodes it as an unknown name: all zeros (trainer.pipeline).
CATEGORIES: Final[dict[str, tuple[str, ...]]] = {
    "gender": ("female", "male", "other"),
    "parental_education": (
        "some_high_school",
        "high_school",
        "some_college",
        "associate",
        "bachelor",
        "master",
        "doctorate",
    ),
    "lunch_program": ("standard", "free_or_reduced"),
    "test_preparation": ("none", "completed"),
}

CATEGORICAL_FEATURES: Final = tuple(CATEGORIES)

FEATURE_COLUMNS: Final = NUMERIC_FEATURES + CATEGORICAL_FEATURES

# Where each feature sits in the proto `Student` message, in the proto's own order.
FEATURE_PARTS: Final[dict[str, str]] = {
    "age": "profile",
    "gender": "profile",
    "parental_education": "profile",
    "lunch_program": "profile",
    "test_preparation": "profile",
    "attendance_percentage": "academic_record",
    "study_hours_per_week": "academic_record",
    "previous_gpa": "academic_record",
    "assignments_completed": "academic_record",
}
PROFILE_FEATURES: Final = tuple(f for f, part in FEATURE_PARTS.items() if part == "profile")
ACADEMIC_RECORD_FEATURES: Final = tuple(
    f for f, part in FEATURE_PARTS.items() if part == "academic_record"
)

# What the request may carry, checked by the inference service and mirrored by CHECK
# constraints in the SQL schema: (lowest, highest), both inclusive.
NUMERIC_RANGES: Final[dict[str, tuple[float, float]]] = {
    "age": (10, 100),
    "attendance_percentage": (0.0, 100.0),
    "study_hours_per_week": (0.0, 100.0),
    "previous_gpa": (0.0, 4.0),
    "assignments_completed": (0.0, 1.0),  # a bool on the wire: 0.0 or 1.0
}

TARGET_SCORE: Final = "final_score"
SCORE_RANGE: Final = (0.0, 100.0)
DEFAULT_PASS_MARK: Final = 50.0

# One value of a feature row: a float (NaN when missing) or a category name (None when missing).
FeatureValue = float | str | None

if set(FEATURE_PARTS) != set(FEATURE_COLUMNS):
    raise ImportError("FEATURE_PARTS and FEATURE_COLUMNS name different features")

# Each feature as its path inside `Student` ("academic_record.previous_gpa"): how answers name
# imputed fields and explanation factors.
FEATURE_PATHS: Final[dict[str, str]] = {f: f"{FEATURE_PARTS[f]}.{f}" for f in FEATURE_COLUMNS}
