"""What a consumer does with one record: decode, deliver, retry, dead-letter. Never skip.

A record is done when every subscription of the group that wants it either handled it, or got
it forwarded to the group's retry topic (``retry_mode="topic"``) or to the dead-letter topic.
What to do after a failure — retry in place, through the retry topic, dead-letter, or wait
behind a dead letter — is :func:`dddframe.bus.decision.decide`'s answer, as on every transport;
``retry_count`` is its ``retry_limit``. Poison (a record that is not our envelope, a value that
is not JSON, an unknown name, a payload that fails validation, a relayed outbox row that could
not be decoded) is dead-lettered at once. Under ``dead_letter="block_aggregate"`` (the default)
a dead letter holds its aggregate back: that subscription's later records of the aggregate go
to the dead-letter topic behind it as *waiting* letters (reason
:class:`~dddframe.errors.HeldBack`, header ``dddframe-dlq-state: waiting``), which operators
see as ``state="waiting"``, not as dead letters of their own. Replaying (or purging) the dead
letter releases them: they follow it through the retry topic, in order, marked
``dddframe-retry-released-by`` with its event id, which lifts the hold. The held aggregates
are rebuilt from the dead-letter topic whenever partitions are assigned. A record no
subscription of the group can take (no envelope, an unknown name) is dead-lettered for
``<group>.*`` and holds nothing. Only then does the consumer count its offset as processed.
Forwarding waits for the broker's acknowledgement and is retried until it succeeds, so a
record is never lost between topics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from aiokafka.structs import ConsumerRecord

from dddframe.bus.attempts import attempt_delivery, log_failure
from dddframe.bus.dead_letters import format_error
from dddframe.bus.decision import (
    DeadLetter,
    DeliveryPolicy,
    Failure,
    Head,
    WaitBehind,
    decide,
)
from dddframe.bus.kafka.records import Headers, from_record
from dddframe.bus.kafka.retry_state import RetryState
from dddframe.bus.kafka.topics import TopicNaming
from dddframe.bus.retry import NoRetry
from dddframe.bus.subscription import Subscription
from dddframe.domain.envelope import Envelope
from dddframe.domain.events import EventRegistry
from dddframe.errors import PoisonEvent, RetryInterrupted
from dddframe.observability.metrics import record_dead_lettered

__all__ = ["DLQ", "RETRY", "RecordHandler", "RetryMode", "Send"]

log = logging.getLogger("dddframe.bus.kafka.consumer")

RetryMode = Literal["blocking", "topic"]
Send = Callable[[str, bytes | None, bytes | None, Headers], Awaitable[None]]
"""Produce one record and wait for the broker's acknowledgement (retried by the caller)."""

RETRY = "dddframe-retry-"
DLQ = "dddframe-dlq-"
SUBSCRIPTION = RETRY + "subscription"
RELEASED_BY = RETRY + "released-by"  # a waiting letter released with the dead letter it names
STATE = DLQ + "state"  # "dead", or "waiting" behind a dead letter
ATTEMPT = RETRY + "attempt"
NOT_BEFORE = RETRY + "not-before"
ORIGIN_TOPIC, ORIGIN_PARTITION, ORIGIN_OFFSET = (
    DLQ + "topic",
    DLQ + "partition",
    DLQ + "offset",
)


@dataclass
class _Origin:
    topic: str
    partition: int
    offset: int


def _bytes_headers(rec: ConsumerRecord[Any, Any]) -> dict[str, bytes]:
    return {k: v or b"" for k, v in rec.headers or ()}


_GROUP_POLICY = DeliveryPolicy(NoRetry(), "continue")
"""For records no subscription of the group can take: nothing to retry, nothing to hold."""


class RecordHandler:
    """Handles the records of one consumer group (its topics and its retry topic)."""

    def __init__(
        self,
        group_id: str,
        subscriptions: Sequence[Subscription],
        registry: EventRegistry,
        naming: TopicNaming,
        send: Send,
        *,
        retry_mode: RetryMode = "blocking",
        retry_count: int | None = None,
        retry_state: RetryState | None = None,
    ) -> None:
        self.group_id = group_id
        self.retry_state = retry_state
        self.stopping = asyncio.Event()  # set when the consumer stops: blocking retries yield
        self.subscriptions = {s.name: s for s in subscriptions}
        self.registry = registry
        self.retry_topic = naming.retry_topic(group_id)
        self.dead_letter_topic = naming.dead_letter_topic(group_id)
        self.send = send
        self.retry_mode = retry_mode
        self.retry_count = retry_count
        self.handled = 0
        # subscription -> ordering key -> event id of the dead letter that holds it back
        self.held: dict[str, dict[str, str]] = {}
        # Holds made (event id) and lifted (None) while load_held's scan runs, replayed on it.
        self._changed: list[tuple[str, str, str | None]] | None = None

    def _mode(self, sub: Subscription) -> RetryMode:
        mode = sub.options.get("retry_mode", self.retry_mode)
        return "topic" if mode == "topic" else "blocking"

    def policy(self, sub: Subscription) -> DeliveryPolicy:
        """The subscription's policies; ``retry_count`` caps its retries."""
        limit = sub.options.get("retry_count", self.retry_count)
        return DeliveryPolicy.of(sub, retry_limit=limit if isinstance(limit, int) else None)

    async def _group_poison(
        self, rec: ConsumerRecord[Any, Any], exc: PoisonEvent, env: Envelope | None
    ) -> None:
        verdict = decide(_GROUP_POLICY, failure=Failure.of(exc), envelope=env)
        assert isinstance(verdict, DeadLetter)
        await self.dead_letter(rec, None, exc, verdict.attempts, env)

    async def handle(self, rec: ConsumerRecord[Any, Any]) -> None:
        """Process one record completely (returns only when it may be committed)."""
        raw = _bytes_headers(rec)
        try:
            env = from_record(rec.headers, rec.value)
        except PoisonEvent as exc:
            await self._group_poison(rec, exc, None)
            return
        if rec.topic == self.retry_topic and raw.get(SUBSCRIPTION):
            await self._handle_retry(rec, raw, env)
            return
        if not self.registry.is_known(env.name):
            unknown = PoisonEvent(f"no event class or declaration is named {env.name[:200]!r}")
            await self._group_poison(rec, unknown, env)
            return
        for sub in self.subscriptions.values():
            if not sub.wants(env):
                continue
            head = self._held_by(sub, env)
            if head is not None:
                await self._wait_behind(rec, sub, env, head)
            else:
                await self._deliver(rec, sub, env, 1)
        self.handled += 1

    async def _wait_behind(
        self, rec: ConsumerRecord[Any, Any], sub: Subscription, env: Envelope, head: str
    ) -> None:
        verdict = decide(self.policy(sub), envelope=env, held_by=Head(head, dead=True))
        assert isinstance(verdict, WaitBehind)
        await self.dead_letter(rec, sub, verdict.error(), 0, env, waiting=True)

    async def _handle_retry(
        self, rec: ConsumerRecord[Any, Any], raw: dict[str, bytes], env: Envelope
    ) -> None:
        name = raw.get(SUBSCRIPTION, b"").decode(errors="replace")
        sub = self.subscriptions.get(name)
        if sub is None:
            unknown = PoisonEvent(f"retry record for unknown subscription {name[:200]!r}")
            await self._group_poison(rec, unknown, env)
            return
        try:
            attempt = max(1, int(raw.get(ATTEMPT, b"1")))
            due = float(raw.get(NOT_BEFORE, b"0")) / 1000
        except ValueError:
            attempt, due = 1, 0.0
        wait = due - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        head = self._held_by(sub, env)
        released_by = raw.get(RELEASED_BY, b"").decode(errors="replace")
        if head is not None and released_by == head:
            # The operator released what waited behind this head (replayed or purged it).
            self._release(sub, env)
            head = None
        if head is not None and head != str(env.event_id):
            await self._wait_behind(rec, sub, env, head)  # still behind its head
        elif await self._deliver(rec, sub, env, attempt) and head is not None:
            self._release(sub, env)  # the head went through
        self.handled += 1

    def _held_by(self, sub: Subscription, env: Envelope) -> str | None:
        """The event id of the dead letter holding this aggregate back, if any."""
        if not self.policy(sub).blocks or env.aggregate_id is None:
            return None
        return self.held.get(sub.name, {}).get(env.ordering_key)

    def _hold(self, sub: Subscription, env: Envelope) -> None:
        if env.aggregate_id is not None:
            self.held.setdefault(sub.name, {}).setdefault(env.ordering_key, str(env.event_id))
            if self._changed is not None:
                self._changed.append((sub.name, env.ordering_key, str(env.event_id)))

    def _release(self, sub: Subscription, env: Envelope) -> None:
        self.held.get(sub.name, {}).pop(env.ordering_key, None)
        if self._changed is not None:
            self._changed.append((sub.name, env.ordering_key, None))

    def begin_load(self) -> None:
        """A scan of the dead letters for :meth:`load_held` starts: remember the holds made
        and lifted meanwhile (records of partitions still assigned go on being handled), so
        the rebuilt holds do not lose them."""
        self._changed = []

    def load_held(self, letters: Iterable[tuple[str, str, str]]) -> None:
        """Rebuild the held aggregates from unresolved dead letters (subscription, ordering
        key, event id), oldest first, then apply the holds made and lifted since
        :meth:`begin_load`; called whenever the group assigns partitions."""
        held: dict[str, dict[str, str]] = {}
        for subscription, key, event_id in letters:
            sub = self.subscriptions.get(subscription)
            if sub is not None and sub.dead_letter == "block_aggregate":
                held.setdefault(subscription, {}).setdefault(key, event_id)
        for subscription, key, made in self._changed or ():
            if made is None:
                held.get(subscription, {}).pop(key, None)
            else:
                held.setdefault(subscription, {}).setdefault(key, made)
        self._changed = None
        self.held = held

    def end_load(self) -> None:
        """The scan failed: keep the holds as they are."""
        self._changed = None

    async def _deliver(
        self, rec: ConsumerRecord[Any, Any], sub: Subscription, env: Envelope, attempt: int
    ) -> bool:
        """Deliver with the listener's retries; True if delivered, False if it left (retry
        topic or dead letters)."""
        policy = self.policy(sub)
        resumed = self.retry_state.resume(sub.name, env) if self.retry_state else None
        if resumed is not None and attempt == 1 and self._mode(sub) == "blocking":
            attempt, due = resumed  # a stopped consumer left it waiting for this attempt
            await self._wait_or_yield(sub, env, attempt, due, "resumed after a restart")
        delivered = await self._attempts(rec, sub, env, attempt, policy)
        if resumed is not None and self.retry_state is not None:
            await self.retry_state.forget(sub.name, env)
        return delivered

    async def _wait_or_yield(
        self, sub: Subscription, env: Envelope, attempt: int, due: float, error: str
    ) -> None:
        """Sleep until ``due``; if the consumer stops first, store the retry state and raise
        :class:`RetryInterrupted` (the record stays uncommitted, the next owner resumes it)."""
        try:
            await asyncio.wait_for(self.stopping.wait(), RetryState.wait_for(due))
        except TimeoutError:
            return
        if self.retry_state is not None:
            try:
                await self.retry_state.save(sub.name, env, attempt, due, error)
            except Exception:
                log.warning("%s: could not store the retry of %s", sub.name, env.event_id)
        raise RetryInterrupted(f"{sub.name}: {env.event_id} waits for attempt {attempt}")

    async def _attempts(
        self,
        rec: ConsumerRecord[Any, Any],
        sub: Subscription,
        env: Envelope,
        number: int,
        policy: DeliveryPolicy,
    ) -> bool:
        while True:
            failed = await attempt_delivery(sub, env, number, policy)
            if failed is None:
                return True
            error, verdict = failed
            if isinstance(verdict, DeadLetter):
                await self.dead_letter(rec, sub, error, verdict.attempts, env, holds=verdict.holds)
                return False
            log_failure(log, sub.name, env, error, verdict)
            if self._mode(sub) == "topic":
                await self._to_retry_topic(rec, sub, verdict.attempt, verdict.delay)
                return False
            number = verdict.attempt
            await self._wait_or_yield(sub, env, number, time.time() + verdict.delay, str(error))

    def _origin(self, rec: ConsumerRecord[Any, Any]) -> _Origin:
        raw = _bytes_headers(rec)
        if ORIGIN_TOPIC in raw:
            try:
                return _Origin(
                    raw[ORIGIN_TOPIC].decode(),
                    int(raw[ORIGIN_PARTITION]),
                    int(raw[ORIGIN_OFFSET]),
                )
            except (KeyError, ValueError, UnicodeDecodeError):
                pass
        return _Origin(rec.topic, rec.partition, rec.offset)

    def _carried(self, rec: ConsumerRecord[Any, Any]) -> Headers:
        """The record's own headers without our retry/dead-letter bookkeeping."""
        return [
            (k, v or b"")
            for k, v in rec.headers or ()
            if not (k.startswith(RETRY) or k.startswith(DLQ))
        ]

    def _origin_headers(self, rec: ConsumerRecord[Any, Any]) -> Headers:
        o = self._origin(rec)
        return [
            (ORIGIN_TOPIC, o.topic.encode()),
            (ORIGIN_PARTITION, str(o.partition).encode()),
            (ORIGIN_OFFSET, str(o.offset).encode()),
        ]

    async def _to_retry_topic(
        self, rec: ConsumerRecord[Any, Any], sub: Subscription, attempt: int, delay: float
    ) -> None:
        headers = [
            *self._carried(rec),
            *self._origin_headers(rec),
            (SUBSCRIPTION, sub.name.encode()),
            (ATTEMPT, str(attempt).encode()),
            (NOT_BEFORE, str(int((time.time() + delay) * 1000)).encode()),
        ]
        await self.send(self.retry_topic, rec.key, rec.value, headers)

    async def dead_letter(
        self,
        rec: ConsumerRecord[Any, Any],
        sub: Subscription | None,
        exc: BaseException,
        attempts: int,
        env: Envelope | None = None,
        *,
        holds: bool = False,
        waiting: bool = False,
    ) -> None:
        """Forward the record to the dead-letter topic with the reason; ``holds``: its
        aggregate's later records of ``sub`` wait behind it (``block_aggregate``); ``waiting``:
        this record is one of those, not a dead letter of its own."""
        reason, _ = format_error(exc)
        name = sub.name if sub is not None else f"{self.group_id}.*"
        headers = [
            *self._carried(rec),
            *self._origin_headers(rec),
            (DLQ + "reason", reason.encode()),
            (DLQ + "attempts", str(attempts).encode()),
            (DLQ + "subscription", name.encode()),
            (DLQ + "group", self.group_id.encode()),
            (DLQ + "at", datetime.now(UTC).isoformat().encode()),
            (STATE, b"waiting" if waiting else b"dead"),
        ]
        await self.send(self.dead_letter_topic, rec.key, rec.value, headers)
        if holds and sub is not None and env is not None:
            self._hold(sub, env)
        if not waiting:
            record_dead_lettered(name)
        log.error(
            "%s: record %s[%d]@%d dead-lettered to %s after %d attempt(s): %s",
            name,
            rec.topic,
            rec.partition,
            rec.offset,
            self.dead_letter_topic,
            attempts,
            reason,
            extra={"event_id": str(env.event_id) if env else None},
        )
