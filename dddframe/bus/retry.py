"""Retry policies shared by every transport (dddfirework's LimitRetry/IntervalRetry/CustomRetry,
easy-bus's RetryDelay).

A policy answers one question: after ``attempt`` failed attempts, how long to wait before the next
one, or ``None`` to give up (the event goes to the dead-letter store).

``limit`` means the same for every policy: how many *retries* follow the first attempt, so an
event is tried at most ``limit + 1`` times (``limit=0``: no retry at all). The one delivery
decision (:mod:`dddframe.bus.decision`) asks the policy; no transport counts on its own.

>>> policy = ExponentialRetry(base=1, max_delay=5, limit=4, jitter=False)
>>> [policy.next_delay(n) for n in (1, 2, 3, 4, 5)]
[1.0, 2.0, 4.0, 5.0, None]
>>> [LimitRetry(limit=2).next_delay(n) for n in (1, 2, 3)]
[0.0, 0.0, None]
>>> ExponentialRetry(limit=0).next_delay(1), ExponentialRetry(limit=1, jitter=False).next_delay(1)
(None, 0.5)
>>> CustomRetry([0.1, 5]).next_delay(2), CustomRetry([0.1, 5]).next_delay(3)
(5, None)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from dddframe.errors import ConfigurationError

__all__ = [
    "CustomRetry",
    "ExponentialRetry",
    "IntervalRetry",
    "LimitRetry",
    "NoRetry",
    "RetryPolicy",
    "as_retry_policy",
]


@runtime_checkable
class RetryPolicy(Protocol):
    def next_delay(self, attempt: int) -> float | None:
        """Seconds to wait after ``attempt`` failed attempts (1 = the first), or None to stop."""


def _check_limit(limit: int | None) -> None:
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ConfigurationError(f"limit must be None (forever) or an int >= 0, not {limit!r}")


@dataclass(frozen=True, slots=True)
class NoRetry:
    """Give up at the first failure."""

    def next_delay(self, attempt: int) -> float | None:
        return None


@dataclass(frozen=True, slots=True)
class LimitRetry:
    """Retry up to ``limit`` times after the first attempt, ``delay`` seconds apart
    (dddfirework LimitRetry)."""

    limit: int = 3
    delay: float = 0.0

    def __post_init__(self) -> None:
        _check_limit(self.limit)

    def next_delay(self, attempt: int) -> float | None:
        return self.delay if attempt <= self.limit else None


@dataclass(frozen=True, slots=True)
class IntervalRetry:
    """Retry every ``interval`` seconds, up to ``limit`` times after the first attempt;
    ``limit=None`` retries forever."""

    interval: float = 1.0
    limit: int | None = 10

    def __post_init__(self) -> None:
        _check_limit(self.limit)
        if self.interval < 0:
            raise ConfigurationError("interval must be >= 0")

    def next_delay(self, attempt: int) -> float | None:
        if self.limit is not None and attempt > self.limit:
            return None
        return self.interval


@dataclass(frozen=True, slots=True)
class CustomRetry:
    """Retry after each delay of the list in turn, then give up (dddfirework CustomRetry)."""

    delays: Sequence[float]

    def __post_init__(self) -> None:
        if any(d < 0 for d in self.delays):
            raise ConfigurationError("every delay must be >= 0")

    def next_delay(self, attempt: int) -> float | None:
        return self.delays[attempt - 1] if attempt <= len(self.delays) else None


@dataclass(frozen=True, slots=True)
class ExponentialRetry:
    """``base * 2**(attempt-1)`` capped at ``max_delay``, with full jitter, up to ``limit``
    retries after the first attempt; ``limit=None`` retries forever."""

    base: float = 0.5
    max_delay: float = 60.0
    limit: int | None = 10
    jitter: bool = True

    def __post_init__(self) -> None:
        _check_limit(self.limit)

    def next_delay(self, attempt: int) -> float | None:
        if self.limit is not None and attempt > self.limit:
            return None
        delay = float(min(self.max_delay, self.base * 2.0 ** (attempt - 1)))
        return random.uniform(0, delay) if self.jitter else delay


@dataclass(frozen=True, slots=True)
class _CallableRetry:
    fn: Callable[[int], float | None]

    def next_delay(self, attempt: int) -> float | None:
        return self.fn(attempt)


def as_retry_policy(policy: RetryPolicy | Callable[[int], float | None]) -> RetryPolicy:
    """Accept a policy object or a plain ``attempt -> delay | None`` callable."""
    if isinstance(policy, RetryPolicy):
        return policy
    if callable(policy):
        return _CallableRetry(policy)
    raise ConfigurationError(
        f"A retry policy must have next_delay() or be callable, not {policy!r}"
    )
