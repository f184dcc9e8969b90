"""When to try a call again: UNAVAILABLE only, with capped exponential backoff and full jitter,
a bounded number of attempts, and never past the call's deadline.

UNAVAILABLE is the one code that says "this server could not take the call now" (not started,
restarting, stopping, its spool full); every other code is an answer that a retry would repeat
(INVALID_ARGUMENT, PERMISSION_DENIED, ...) or a budget already spent (DEADLINE_EXCEEDED).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc

from studentperf.retry import Backoff


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`max_attempts` counts the first try; 1 turns retrying off.

    The pause before retry n (n = 1, 2, ...) is drawn uniformly from
    [0, min(max_backoff_s, initial_backoff_s * multiplier ** (n - 1))]: "full jitter", so many
    clients that failed together do not come back together.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    retryable: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE})
    # Whether to retry Predict and BatchPredict after an UNAVAILABLE whose predictions the
    # server says may be recorded (studentperf.error_reasons.MAY_BE_RECORDED): a retry then
    # leaves two recorded predictions for a student. Off: the caller gets the error and
    # decides; that refusal mostly means the spool is full, which a retry would meet again.
    retry_may_be_recorded: bool = False

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not 0 < self.initial_backoff_s <= self.max_backoff_s:
            raise ValueError("backoffs must satisfy 0 < initial_backoff_s <= max_backoff_s")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, got {self.multiplier}")

    @classmethod
    def none(cls) -> RetryPolicy:
        """Never retry."""
        return cls(max_attempts=1)

    def backoff_cap_s(self, retry: int) -> float:
        """The longest pause before retry number `retry` (1 for the first retry)."""
        return Backoff(self.initial_backoff_s, self.max_backoff_s, self.multiplier).pause(retry)

    def pause_before_retry(
        self,
        code: grpc.StatusCode,
        attempts_made: int,
        remaining_s: float,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to give up and raise.

        Gives up for a code not in `retryable`, after `max_attempts`, or when the pause would
        leave no time before the deadline (`remaining_s`) for another attempt.
        """
        if code not in self.retryable or attempts_made >= self.max_attempts:
            return None
        pause = (rng or random).uniform(0.0, self.backoff_cap_s(attempts_made))
        if pause >= remaining_s:
            return None
        return pause
