"""What the prediction core (inference_service.core) meets the outside through.

The protocols its model, event publisher, history store, spool and erasure audit implement
(so unit tests pass fakes and the server the real ones), and the answers and errors it gives
back to the servicer. No transport here either: no gRPC, Kafka or SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from studentperf.envelope import KafkaRecord
from studentperf.features import FeatureValue
from studentperf.history import PageQuery
from studentperf.score_interval import ScoreInterval
from studentperf.v1.prediction_service_pb2 import ModelInfo


class PublishUnavailable(Exception):
    """The events could not be handed off for recording in time; nothing is promised."""


@dataclass(frozen=True, slots=True)
class AcceptedOutcome:
    """An outcome handed off for recording (acknowledged by Kafka or spooled)."""

    event_id: str


@dataclass(frozen=True, slots=True)
class ErasureAnswer:
    """An erasure handed off for recording: its event id and, when the recorder applied it
    within the wait, what it removed: rows per table, and the entries that are no table
    (studentperf.erasure FACTS_CLEARED, EVENTS_SKIPPED); empty: nothing. None: not yet confirmed."""

    erasure_id: str
    removed: Mapping[str, int] | None


class HistoryUnavailable(Exception):
    """A student's history could not be read (the database is away)."""


class StudentNotFound(Exception):
    """The database knows no student of this id."""


@dataclass(frozen=True, slots=True)
class ScoreContributions:
    """One student's raw score taken apart: base + sum(contributions) = raw."""

    base: float
    raw: float
    contributions: tuple[float, ...]  # one per FEATURE_COLUMNS


class EventPublisher(Protocol):
    async def publish(self, records: Sequence[KafkaRecord]) -> None:
        """Returns once every record is acknowledged; raises PublishUnavailable otherwise."""


class Model(Protocol):
    @property
    def version(self) -> str: ...

    @property
    def pass_mark(self) -> float: ...

    def predict(
        self, rows: Sequence[tuple[FeatureValue, ...]]
    ) -> tuple[Sequence[float], Sequence[float]]:
        """Final scores (0-100) and pass probabilities (0-1), one of each per row."""

    @property
    def score_interval(self) -> ScoreInterval | None:
        """The range around each score and its coverage; None for a model trained before
        intervals (its predictions carry none)."""

    def explain(self, rows: Sequence[tuple[FeatureValue, ...]]) -> Sequence[ScoreContributions]:
        """Each row's score taken apart by feature, in points (see studentperf.explain)."""

    def info(self) -> ModelInfo:
        """What GetModelInfo answers: version, training time, held-out metrics."""


class PredictionMetrics(Protocol):
    def predicted(self, model_version: str, count: int, passes: int) -> None:
        """Counts `count` predictions by `model_version`, `passes` of them a pass."""


class HistoryStore(Protocol):
    async def page(self, query: PageQuery) -> Sequence[Mapping[str, Any]] | None:
        """The page's rows, newest first (None: unknown student); or HistoryUnavailable."""


class HeldEvents(Protocol):
    async def forget(self, key: bytes) -> int:
        """Drops the events keyed `key` that wait to be sent (the spool); returns how many."""


class ErasureAudit(Protocol):
    async def erasure(self, event_id: str) -> Mapping[str, int] | None:
        """What the erasure `event_id` removed (rows per table, and FACTS_CLEARED and
        EVENTS_SKIPPED, which are no table), once the recorder has applied it; None before.
        Raises HistoryUnavailable while the database cannot be read."""
