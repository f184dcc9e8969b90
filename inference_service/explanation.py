"""A prediction's explanation: the largest contributions to its score, the rest summed."""

from __future__ import annotations

from collections.abc import Sequence

from inference_service.core_ports import ScoreContributions
from studentperf.features import FEATURE_COLUMNS, FEATURE_PATHS
from studentperf.v1.prediction_service_pb2 import FactorContribution, ScoreExplanation


def explanation(
    found: ScoreContributions, top_factors: int, imputed_fields: Sequence[str]
) -> ScoreExplanation:
    """The `top_factors` largest contributions by size (ties: schema order), the rest summed."""
    imputed = frozenset(imputed_fields)
    ranked = sorted(
        zip(FEATURE_COLUMNS, found.contributions, strict=True), key=lambda pair: -abs(pair[1])
    )
    shown, rest = ranked[:top_factors], ranked[top_factors:]
    return ScoreExplanation(
        base_score=found.base,
        top_factors=[
            FactorContribution(
                feature=FEATURE_PATHS[name],
                contribution=value,
                imputed=FEATURE_PATHS[name] in imputed,
            )
            for name, value in shown
        ],
        other_factors=sum(value for _, value in rest),
        raw_score=found.raw,
    )
