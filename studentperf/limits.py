"""Request-size limits the server enforces and clients split their work by: one definition.

The proto comments state the same figures for readers of the schema; a unit test keeps them in
step with these constants.
"""

from __future__ import annotations

from typing import Final

# Most students in one BatchPredict, or outcomes in one RecordOutcomes, unless the server's
# STUDENTPERF_MAX_BATCH_SIZE says otherwise.
DEFAULT_MAX_BATCH_SIZE: Final = 10_000

# Most students in one BatchPredict that asks for explanations: explaining costs up to 512
# model evaluations per student (see studentperf.explain). Not configurable.
MAX_EXPLAINED_BATCH: Final = 1_000

# Largest request or response, in bytes, unless the server's STUDENTPERF_MAX_MESSAGE_BYTES says
# otherwise (10,000 students take about 1 MiB).
DEFAULT_MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
