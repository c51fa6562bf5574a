"""The one delivery decision: what happens to an event after (or instead of) a delivery attempt.

Every transport asks :func:`decide` and does what it answers in its own medium (a parked row, a
retry or dead-letter topic, a delay or dead-letter queue); none decides on its own. Given what
is known of the envelope, the attempt, what went wrong and the subscription's policies, the
answer is one of:

* :class:`Deliver` — nothing stands in the way: call the listener (attempt ``attempt``);
* :class:`RetryAfter` — the attempt failed; try again after ``delay`` seconds;
* :class:`DeadLetter` — give up: store it with ``reason``; ``holds`` says whether its
  aggregate's later events wait behind it (``dead_letter="block_aggregate"``) or proceed
  (``"continue"``);
* :class:`WaitBehind` — an earlier event of the same aggregate is retrying or dead: queue behind
  it, so order per aggregate holds.

The rules, the same on every transport:

1. An aggregate held by an earlier event (``held_by``) waits behind it — whatever else is wrong.
2. Poison (the record or row cannot be decoded, there is no envelope, the payload is not JSON,
   the event name is unknown, the payload fails validation) is dead-lettered at once: retrying
   cannot change the bytes. A row the outbox reader could not decode carries its reason in the
   ``dddframe-undecodable`` header (:data:`dddframe.outbox.records.UNDECODABLE`), so it is
   poison wherever it travels.
3. A worker crash is retried (one event at a time) until the event was in flight
   ``crash_limit`` times, then dead-lettered.
4. A listener error or timeout is retried after ``retry.next_delay(attempt)`` seconds until the
   policy gives up or ``retry_limit`` (Kafka's ``retry_count``) retries were made. ``limit=N``
   always means N retries after the first attempt.
5. A dead letter holds its aggregate under ``block_aggregate`` and not under ``continue``; a
   retrying event always holds it (a later event must not overtake it).

>>> from dddframe.bus.retry import LimitRetry
>>> env = Envelope.new("Order:Placed", "{}", aggregate_type="Order", aggregate_id="7")
>>> policy = DeliveryPolicy(LimitRetry(limit=1, delay=0.5))
>>> decide(policy, envelope=env)
Deliver(attempt=1)
>>> boom = Failure("error", "ValueError: boom")
>>> decide(policy, attempt=1, failure=boom, envelope=env)
RetryAfter(delay=0.5, attempt=2)
>>> decide(policy, attempt=2, failure=boom, envelope=env)
DeadLetter(reason='ValueError: boom', attempts=2, holds=True)
>>> decide(policy, failure=boom, envelope=env, retry_limit=0)  # Kafka's retry_count=0
DeadLetter(reason='ValueError: boom', attempts=1, holds=True)
>>> decide(policy, failure=Failure("poison", "PoisonEvent: not JSON"), envelope=env)
DeadLetter(reason='PoisonEvent: not JSON', attempts=1, holds=True)
>>> decide(DeliveryPolicy(LimitRetry(), "continue"), failure=Failure("poison", "x"), envelope=env)
DeadLetter(reason='x', attempts=1, holds=False)
>>> decide(policy, failure=Failure("poison", "no envelope"))  # nothing known to hold
DeadLetter(reason='no envelope', attempts=1, holds=False)
>>> decide(policy, envelope=env, held_by=Head("0191-...", dead=True)).reason[:30]
'held behind dead letter 0191-.'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from dddframe.bus.retry import RetryPolicy
from dddframe.bus.subscription import DeadLetterPolicy, Subscription
from dddframe.domain.envelope import Envelope
from dddframe.errors import HeldBack, InvalidArgument, PoisonEvent, WorkerCrashed
from dddframe.outbox.records import UNDECODABLE

__all__ = [
    "DeadLetter",
    "Decision",
    "Deliver",
    "DeliveryPolicy",
    "Failure",
    "FailureKind",
    "Head",
    "RetryAfter",
    "WaitBehind",
    "decide",
    "keep_undecodable",
    "undecodable",
]

FailureKind = Literal["error", "timeout", "crash", "poison"]

_MAX_REASON = 2000


@dataclass(frozen=True, slots=True)
class Failure:
    """What went wrong: ``kind`` and a one-line ``reason`` (stored with a dead letter)."""

    kind: FailureKind
    reason: str

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        """Classify an exception raised by decoding or by the listener.

        >>> Failure.of(PoisonEvent("unknown name 'X'"))
        Failure(kind='poison', reason="PoisonEvent: unknown name 'X'")
        >>> Failure.of(TimeoutError()).kind, Failure.of(KeyError("k")).reason
        ('timeout', "KeyError: 'k'")
        """
        kind: FailureKind
        if isinstance(exc, PoisonEvent):
            kind = "poison"
        elif isinstance(exc, WorkerCrashed):
            kind = "crash"
        elif isinstance(exc, TimeoutError):
            kind = "timeout"
        else:
            kind = "error"
        try:
            text = str(exc)
        except Exception:  # an exception whose message itself fails
            text = "(the error's message could not be printed)"
        text = text or (
            "the listener ran longer than the subscription's timeout"
            if kind == "timeout"
            else "(no message)"
        )
        return cls(kind, f"{type(exc).__name__}: {text}"[:_MAX_REASON])


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """A subscription's delivery policies, as the decision needs them.

    ``retry_limit`` caps the retries on top of the policy (Kafka's ``retry_count``: ``N``
    retries after the first attempt); ``crash_limit`` is how often an event may be in flight
    when the worker died before it is dead-lettered.
    """

    retry: RetryPolicy
    dead_letter: DeadLetterPolicy = "block_aggregate"
    retry_limit: int | None = None
    crash_limit: int = 3

    @classmethod
    def of(
        cls, subscription: Subscription, *, retry_limit: int | None = None, crash_limit: int = 3
    ) -> DeliveryPolicy:
        return cls(subscription.retry, subscription.dead_letter, retry_limit, crash_limit)

    @property
    def blocks(self) -> bool:
        return self.dead_letter == "block_aggregate"


@dataclass(frozen=True, slots=True)
class Head:
    """The earlier event an aggregate is held behind: ``ref`` names it (an event id or an outbox
    position), ``dead`` says whether it is a dead letter (else it is waiting to be retried)."""

    ref: str
    dead: bool


@dataclass(frozen=True, slots=True)
class Deliver:
    attempt: int


@dataclass(frozen=True, slots=True)
class RetryAfter:
    delay: float
    attempt: int
    """The number of the next attempt."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    attempts: int
    holds: bool
    """Whether the aggregate's later events wait behind this dead letter."""


@dataclass(frozen=True, slots=True)
class WaitBehind:
    head: Head

    @property
    def reason(self) -> str:
        return str(self.error())

    def error(self) -> HeldBack:
        """The error stored with an event that waits in a dead-letter store."""
        if self.head.dead:
            return HeldBack(
                f"held behind dead letter {self.head.ref} of the same aggregate "
                "(dead_letter='block_aggregate'); replay the aggregate's dead letters together "
                "to deliver them in order"
            )
        return HeldBack(
            f"waiting behind {self.head.ref} of the same aggregate, which is retrying; it is "
            "delivered right after it"
        )


Decision = Deliver | RetryAfter | DeadLetter | WaitBehind


def undecodable(envelope: Envelope | None) -> str | None:
    """Why this envelope's row could not be decoded, or None (the ``dddframe-undecodable``
    header).

    >>> undecodable(Envelope.new("A:B", "{}", headers={UNDECODABLE: "headers are not JSON"}))
    'headers are not JSON'
    >>> undecodable(Envelope.new("A:B", "{}")) is None
    True
    """
    if envelope is None:
        return None
    return envelope.headers.get(UNDECODABLE)


def keep_undecodable(envelope: Envelope, headers: Mapping[str, str]) -> Envelope:
    """``envelope`` decoded from broker ``headers``, with the undecodable-row reason those
    headers carried put back (the codec drops every ``dddframe-*`` header it does not know).

    >>> env = Envelope.new("A:B", "{}")
    >>> keep_undecodable(env, {UNDECODABLE: "headers are not JSON"}).headers
    {'dddframe-undecodable': 'headers are not JSON'}
    >>> keep_undecodable(env, {}) is env
    True
    """
    reason = headers.get(UNDECODABLE)
    if reason is None:
        return envelope
    return replace(envelope, headers={**envelope.headers, UNDECODABLE: str(reason)})


def decide(
    policy: DeliveryPolicy,
    *,
    attempt: int = 1,
    failure: Failure | None = None,
    envelope: Envelope | None = None,
    held_by: Head | None = None,
    retry_limit: int | None = None,
) -> Decision:
    """The one answer to "what now?" (see the module docstring for the rules).

    ``attempt``: the attempt that is about to run (``failure`` None) or that failed (for a
    crash: how many times the event was in flight when the worker died). ``envelope``: what is
    known of it (None when no envelope could be decoded at all; then nothing is held behind
    it). ``held_by``: the earlier event its aggregate is held behind, if any. ``retry_limit``
    overrides the policy's.
    """
    if attempt < 1:
        raise InvalidArgument(f"attempt counts from 1, not {attempt!r}")
    if held_by is not None:
        return WaitBehind(held_by)
    flagged = undecodable(envelope)
    if flagged is not None:
        failure = Failure("poison", f"PoisonEvent: {flagged}"[:_MAX_REASON])
    if failure is None:
        return Deliver(attempt)
    holds = policy.blocks and envelope is not None
    if failure.kind == "poison":
        return DeadLetter(failure.reason, attempt, holds)
    if failure.kind == "crash":
        if attempt >= policy.crash_limit:
            return DeadLetter(failure.reason, attempt, holds)
        return RetryAfter(0.0, attempt + 1)
    limit = retry_limit if retry_limit is not None else policy.retry_limit
    delay = None if limit is not None and attempt > limit else policy.retry.next_delay(attempt)
    if delay is None:
        return DeadLetter(failure.reason, attempt, holds)
    return RetryAfter(max(0.0, float(delay)), attempt + 1)
