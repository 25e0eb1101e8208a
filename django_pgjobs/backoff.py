"""Retry delays as pure functions: same inputs, same delay.

Randomness (jitter) comes in as a number in [0, 1) so that callers and tests
decide where it comes from.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from . import limits
from .exceptions import InvalidOption

STRATEGIES = ("exponential", "linear", "fixed")


@dataclass(frozen=True)
class Backoff:
    strategy: str = "exponential"
    base: float = 2.0  # seconds: first delay (exponential, linear) or every delay (fixed)
    max: float = 24 * 3600.0  # seconds: no delay is longer than this
    jitter: float = 0.1  # fraction: the delay is spread by up to +/- this much

    def __post_init__(self) -> None:
        """Refuse what would make a retry's time uncomputable (NaN, a delay past year
        9999): a worker computes it when a job fails, and could not record the failure."""
        if not isinstance(self.strategy, str) or self.strategy not in STRATEGIES:
            raise InvalidOption(
                "backoff strategy",
                f"is unknown: {limits.shown(self.strategy)}; use one of {STRATEGIES}",
            )
        limits.seconds(self.base, "backoff base", zero=True)
        limits.seconds(self.max, "backoff max", zero=True)
        limits.fraction(self.jitter, "backoff jitter")

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
        if not isinstance(options, dict):
            raise InvalidOption("backoff", f"must be a dict, not {limits.shown(options)}")
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"unknown backoff option(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**options)
