"""One delivery attempt and what it came to, the same on every transport.

:func:`attempt_delivery` asks :func:`~dddframe.bus.decision.decide` whether to call the listener at
all (an undecodable event is poison and never reaches it), calls it, and on failure asks
again what to do: retry after a delay, or dead-letter. Where the retry waits (in place, in a
retry topic, in a delay queue, in the parked table) is the transport's; the answer is not.
:func:`log_failure` writes the one log line of a failed attempt.
"""

from __future__ import annotations

import logging

from dddframe.bus.decision import (
    DeadLetter,
    Deliver,
    DeliveryPolicy,
    Failure,
    RetryAfter,
    decide,
    undecodable,
)
from dddframe.bus.subscription import Subscription
from dddframe.domain.envelope import Envelope
from dddframe.errors import PoisonEvent

__all__ = ["Failed", "attempt_delivery", "log_failure"]

Failed = tuple[BaseException, RetryAfter | DeadLetter]
"""The error of a failed attempt and the decision about it."""


async def attempt_delivery(
    subscription: Subscription, env: Envelope, number: int, policy: DeliveryPolicy
) -> Failed | None:
    """Deliver ``env`` as attempt ``number`` unless the decision says otherwise; None when
    the listener took it, else the error and what to do about it."""
    verdict = decide(policy, attempt=number, envelope=env)
    error: BaseException
    if isinstance(verdict, Deliver):
        try:
            await subscription.deliver(env, number, subscription)
            return None
        except Exception as exc:  # the listener's failure, whatever it is, is ours to handle
            error = exc
            verdict = decide(policy, attempt=number, failure=Failure.of(exc), envelope=env)
    else:
        error = PoisonEvent(undecodable(env) or "the event cannot be decoded")
    assert isinstance(verdict, RetryAfter | DeadLetter)
    return error, verdict


def log_failure(
    log: logging.Logger,
    subscription: str,
    env: Envelope,
    exc: BaseException,
    verdict: RetryAfter | DeadLetter,
) -> None:
    """Log a failed attempt: a warning when it is retried, an error when it is dead-lettered
    (the transport counts the dead letter where it stores it)."""
    extra = {
        "event_id": str(env.event_id),
        "correlation_id": env.correlation_id,
        "subscription": subscription,
    }
    if isinstance(verdict, DeadLetter):
        log.error(
            "%s: %r %s dead-lettered after %d attempt(s): %s",
            subscription,
            env.name[:200],
            env.event_id,
            verdict.attempts,
            exc,
            extra=extra,
        )
        return
    log.warning(
        "%s: %r %s failed (attempt %d), retry in %.3fs: %s",
        subscription,
        env.name[:200],
        env.event_id,
        verdict.attempt - 1,
        verdict.delay,
        exc,
        extra=extra,
    )
