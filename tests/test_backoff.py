"""Retry delays are pure functions of (policy, attempt, spread)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from django_pgjobs.backoff import Backoff

policies = st.builds(
    Backoff,
    strategy=st.sampled_from(["exponential", "linear", "fixed"]),
    base=st.floats(0, 3600, allow_nan=False),
    max=st.floats(0, 7 * 86400, allow_nan=False),
    jitter=st.floats(0, 1, allow_nan=False),
)
attempts = st.integers(1, 10_000)
spreads = st.floats(0, 1, exclude_max=True, allow_nan=False)


@given(policies, attempts, spreads)
def test_a_delay_is_never_negative_nor_over_the_cap(policy, attempt, spread):
    assert 0 <= policy.delay(attempt, spread) <= policy.max


@given(policies, attempts, spreads)
def test_jitter_stays_within_its_band(policy, attempt, spread):
    centre = policy.delay(attempt)
    assert abs(policy.delay(attempt, spread) - centre) <= policy.jitter * centre + 1e-9


@given(policies.filter(lambda p: p.strategy != "fixed"), attempts)
def test_without_jitter_delays_never_shrink_as_attempts_grow(policy, attempt):
    assert policy.delay(attempt + 1) >= policy.delay(attempt)


@given(attempts, spreads)
def test_fixed_is_the_base_every_time(attempt, spread):
    assert Backoff("fixed", base=7, jitter=0).delay(attempt, spread) == 7


def test_exponential_doubles_from_the_base_until_the_cap():
    policy = Backoff("exponential", base=2, max=60, jitter=0)
    assert [policy.delay(n) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]


def test_linear_grows_by_the_base():
    assert [Backoff("linear", base=5, jitter=0).delay(n) for n in (1, 2, 3)] == [5, 10, 15]


def test_next_run_at_adds_the_delay_to_the_given_instant():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    policy = Backoff("fixed", base=30, jitter=0.5)
    assert policy.next_run_at(3, now, spread=0.5) == now + timedelta(seconds=30)
    assert policy.next_run_at(3, now, spread=0.0) == now + timedelta(seconds=15)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"strategy": "quadratic"}, "backoff strategy is unknown"),
        ({"base": -1}, "backoff base must be a number of seconds from 0 and"),
        ({"jitter": 2}, "from 0 to 1"),
        ({"speed": 1}, "unknown backoff option"),
        ({"base": float("nan")}, "backoff base must be a number of seconds"),
        ({"max": float("inf")}, "backoff max must be a number of seconds"),
        ({"max": 10**400}, "backoff max must be a number of seconds"),
        ({"jitter": float("nan")}, "from 0 to 1"),
        ({"base": "2"}, "backoff base must be a number of seconds"),
    ],
)
def test_bad_policies_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        Backoff.from_dict(options)


def test_attempts_count_from_one():
    with pytest.raises(ValueError):
        Backoff().delay(0)
