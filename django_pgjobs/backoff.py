"""Retry delays as pure functions: same inputs, same delay.

Randomness (jitter) comes in as a number in [0, 1) so that callers and tests
decide where it comes from.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

STRATEGIES = ("exponential", "linear", "fixed")


@dataclass(frozen=True)
class Backoff:
    strategy: str = "exponential"
    base: float = 2.0  # seconds: first delay (exponential, linear) or every delay (fixed)
    max: float = 24 * 3600.0  # seconds: no delay is longer than this
    jitter: float = 0.1  # fraction: the delay is spread by up to +/- this much

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown backoff strategy {self.strategy!r}; use one of {STRATEGIES}")
        if self.base < 0 or self.max < 0:
            raise ValueError("backoff base and max must not be negative")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter is a fraction between 0 and 1")

    def delay(self, attempt: int, spread: float = 0.5) -> float:
        """Seconds to wait after failed ``attempt`` (1-based).

        ``spread`` in [0, 1) picks where in the jitter band the delay falls;
        0.5 is the centre, i.e. no jitter.
        """
        if attempt < 1:
            raise ValueError("attempt counts from 1")
        if self.strategy == "fixed":
            raw = self.base
        elif self.strategy == "linear":
            raw = self.base * attempt
        else:
            # Cap the exponent so huge attempt numbers don't overflow floats.
            raw = self.base * 2 ** min(attempt - 1, 64)
        capped = min(raw, self.max)
        jittered = capped * (1 + self.jitter * (2 * spread - 1))
        return max(0.0, min(jittered, self.max))

    def next_run_at(self, attempt: int, now: datetime, spread: float | None = None) -> datetime:
        if spread is None:
            spread = random.random()
        return now + timedelta(seconds=self.delay(attempt, spread))

    @classmethod
    def from_dict(cls, options: dict) -> Backoff:
        known = {"strategy", "base", "max", "jitter"}
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"unknown backoff option(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**options)
