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

# Most STUDENTPERF_MAX_BATCH_SIZE may be: LARGEST_ANSWER_BYTES holds for item indexes this long.
MAX_BATCH_SIZE: Final = 1_000_000

# Largest response, in bytes, unless the server's STUDENTPERF_MAX_MESSAGE_BYTES says otherwise:
# 10,000 answers at their largest take about two thirds of it. Clients accept responses this
# large.
DEFAULT_MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024

# The largest answer to one item of a batch on the wire, its tag and length included: a student
# that breaks every rule at once, refused (bad_request names each of its nine fields and rule,
# the message shows two; inference_service.servicer), at an index of up to six digits. A
# prediction, even with every field imputed, takes less. tests/unit/test_limits.py measures it.
LARGEST_ANSWER_BYTES: Final = 1_120

# The largest valid item of a batch on the wire, its tag and length included: a student with every
# field set at its longest (64-character id, age 100, all four enums, all three numbers, the
# flag) takes 111 bytes, and so does an outcome (64-character id, 32-character term, score).
# studentperf.largest_items builds both; tests/unit/test_limits.py measures them.
LARGEST_ITEM_BYTES: Final = 111
# A request's other fields at their longest: top_factors, a uint32 (tag and 5-byte varint: 6),
# and term (tag, length and 32 characters: 34).
REQUEST_FIELDS_BYTES: Final = 40


def max_request_bytes(max_batch_size: int) -> int:
    """The largest request the server accepts: the largest valid one (a full batch of the
    largest items) and 1/16 more, room for a newer client's few extra bytes per item.

    Anything larger is refused with RESOURCE_EXHAUSTED before it is read into a message: what a
    request may cost the server (parsing many tiny items costs about 25 times their bytes) is
    bounded by this figure.
    """
    largest = max_batch_size * LARGEST_ITEM_BYTES + REQUEST_FIELDS_BYTES
    return max(4096, largest + largest // 16)


# Largest request, in bytes, unless the server's STUDENTPERF_MAX_REQUEST_BYTES says otherwise
# (or STUDENTPERF_MAX_BATCH_SIZE, which it follows): 1,179,417 bytes, for a largest valid
# request of 1,110,040 (10,000 students).
DEFAULT_MAX_REQUEST_BYTES: Final = max_request_bytes(DEFAULT_MAX_BATCH_SIZE)


def max_response_bytes(max_batch_size: int) -> int:
    """The largest answer to a batch of `max_batch_size` items: the server's response limit must
    be at least this, or a batch it accepts could get RESOURCE_EXHAUSTED instead of its
    answer, after its valid items were published."""
    return max_batch_size * LARGEST_ANSWER_BYTES
