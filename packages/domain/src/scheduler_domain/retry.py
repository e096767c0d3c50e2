"""How often, and how long after, a failed, timed-out or lost run is tried again."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from scheduler_domain.errors import ValidationError

_MICROSECOND = timedelta(microseconds=1)
MAX_ATTEMPTS_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff capped at ``max_delay``, plus up to ``jitter`` so retries spread out."""

    max_attempts: int = 1
    base_delay: timedelta = timedelta(seconds=10)
    max_delay: timedelta = timedelta(hours=1)
    jitter: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        attempts = self.max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise ValidationError("max_attempts must be an integer", field="retry.max_attempts")
        if not 1 <= attempts <= MAX_ATTEMPTS_LIMIT:
            raise ValidationError(
                f"max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}",
                field="retry.max_attempts",
            )
        for name in ("base_delay", "max_delay", "jitter"):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value < timedelta(0):
                raise ValidationError(f"{name} must not be negative", field=f"retry.{name}")
        if self.base_delay > self.max_delay:
            raise ValidationError("base_delay must not exceed max_delay", field="retry.base_delay")

    def backoff(self, attempt: int, *, rng: random.Random | None = None) -> timedelta:
        """Delay before the attempt after ``attempt`` (1-based, the one that just failed)."""
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise ValidationError("attempt must be a positive integer", field="attempt")
        base = self.base_delay // _MICROSECOND
        ceiling = self.max_delay // _MICROSECOND
        exponent = attempt - 1
        # Past the ceiling's bit length the doubling is capped anyway; stop before it grows huge.
        if base == 0:
            delay = 0
        elif exponent >= ceiling.bit_length():
            delay = ceiling
        else:
            delay = min(base << exponent, ceiling)
        jitter = self.jitter // _MICROSECOND
        if jitter:
            generator = rng if rng is not None else random.SystemRandom()
            delay += min(round(generator.uniform(0, jitter)), jitter)
        return timedelta(microseconds=delay)

    def has_attempts_left(self, attempt: int) -> bool:
        """Whether a run whose ``attempt`` (1-based) just failed may be tried again."""
        return attempt < self.max_attempts
