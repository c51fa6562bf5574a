"""The one delivery decision and the one meaning of retry limits (issue 11)."""

from __future__ import annotations

import pytest

from dddframe import CustomRetry, ExponentialRetry, IntervalRetry, LimitRetry, NoRetry
from dddframe.bus.decision import (
    DeadLetter,
    Deliver,
    DeliveryPolicy,
    Failure,
    Head,
    RetryAfter,
    WaitBehind,
    decide,
)
from dddframe.bus.retry import RetryPolicy, as_retry_policy
from dddframe.domain.envelope import Envelope
from dddframe.errors import HeldBack, InvalidArgument, PoisonEvent, WorkerCrashed
from dddframe.outbox.records import UNDECODABLE

ENV = Envelope.new("Order:Placed", "{}", aggregate_type="Order", aggregate_id="7")
ERROR = Failure.of(RuntimeError("listener failed"))


def attempts_until_dead(policy: RetryPolicy, *, retry_limit: int | None = None) -> int:
    """How many attempts an always-failing event gets before it is a dead letter."""
    attempt = 1
    while True:
        verdict = decide(
            DeliveryPolicy(policy),
            attempt=attempt,
            failure=ERROR,
            envelope=ENV,
            retry_limit=retry_limit,
        )
        if isinstance(verdict, DeadLetter):
            return verdict.attempts
        assert isinstance(verdict, RetryAfter) and verdict.attempt == attempt + 1
        attempt = verdict.attempt


@pytest.mark.parametrize("limit", [0, 1, 2, 5])
def test_limit_means_retries_after_the_first_attempt_for_every_policy(limit: int) -> None:
    policies: list[RetryPolicy] = [
        LimitRetry(limit=limit),
        IntervalRetry(interval=0.0, limit=limit),
        ExponentialRetry(base=0.01, limit=limit),
        CustomRetry([0.0] * limit),
        as_retry_policy(lambda attempt: 0.0 if attempt <= limit else None),
    ]
    for policy in policies:
        assert attempts_until_dead(policy) == limit + 1, policy
    # Kafka's retry_count caps any policy with the same meaning
    assert (
        attempts_until_dead(IntervalRetry(interval=0, limit=None), retry_limit=limit) == limit + 1
    )
    assert attempts_until_dead(NoRetry()) == 1


@pytest.mark.parametrize(
    "exc",
    [
        PoisonEvent("payload of 'Order:Placed' is not valid JSON"),
        PoisonEvent("no event class or declaration is named 'Order:Nope'"),
    ],
)
@pytest.mark.parametrize("dead_letter", ["block_aggregate", "continue"])
def test_poison_is_dead_lettered_at_once(exc: PoisonEvent, dead_letter: str) -> None:
    policy = DeliveryPolicy(IntervalRetry(interval=0, limit=None), dead_letter)  # type: ignore[arg-type]
    verdict = decide(policy, failure=Failure.of(exc), envelope=ENV)
    assert verdict == DeadLetter(f"PoisonEvent: {exc}", 1, dead_letter == "block_aggregate")
    # nothing known of the envelope: nothing to hold
    assert decide(policy, failure=Failure.of(exc)) == DeadLetter(f"PoisonEvent: {exc}", 1, False)


def test_an_undecodable_row_is_poison_before_any_delivery() -> None:
    flagged = Envelope.new("Order:Placed", "{}", aggregate_id="7", headers={UNDECODABLE: "bad"})
    verdict = decide(DeliveryPolicy(LimitRetry(limit=3)), envelope=flagged)
    assert verdict == DeadLetter("PoisonEvent: bad", 1, True)
    assert decide(DeliveryPolicy(LimitRetry(limit=3)), envelope=ENV) == Deliver(1)


def test_a_held_aggregate_waits_and_a_crash_is_retried_until_the_limit() -> None:
    policy = DeliveryPolicy(LimitRetry(limit=3), crash_limit=2)
    waiting = decide(policy, envelope=ENV, held_by=Head("e-1", dead=True))
    assert isinstance(waiting, WaitBehind) and isinstance(waiting.error(), HeldBack)
    assert "held behind dead letter e-1" in waiting.reason
    crash = Failure.of(WorkerCrashed("died"))
    assert crash.kind == "crash"
    assert decide(policy, attempt=1, failure=crash, envelope=ENV) == RetryAfter(0.0, 2)
    assert isinstance(decide(policy, attempt=2, failure=crash, envelope=ENV), DeadLetter)


def test_failures_are_classified_once() -> None:
    assert Failure.of(TimeoutError()).kind == "timeout"
    assert "timeout" in Failure.of(TimeoutError()).reason
    assert Failure.of(ValueError("x")) == Failure("error", "ValueError: x")
    with pytest.raises(InvalidArgument, match="attempt counts from 1"):
        decide(DeliveryPolicy(NoRetry()), attempt=0)
