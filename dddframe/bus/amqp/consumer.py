"""Consuming one subscription's queue: lanes per aggregate, ack after success, retries through
delay queues that keep an aggregate's order, and the dead-letter queue.

Order per aggregate: the queue has a single active consumer, which splits messages into
``concurrency`` lanes by a stable hash of the aggregate; each lane handles its messages one at a
time and acknowledges each only after the listener succeeded (or the message was moved, with a
publisher confirm, to a delay queue or the dead-letter queue).

What to do after a failure is :func:`dddframe.bus.decision.decide`'s answer, as on every
transport. A failed message goes to the delay queue for its next retry delay. While it waits, the
aggregate is *held*: its later messages are sent, in order, to the same delay queue, marked
waiting, so they come back right after it and never overtake it. When retries run out the message
goes to ``<queue>.dlq`` with the reason; under ``block_aggregate`` the aggregate's later messages
follow it there (marked waiting) until the operator replays them, in order. Poison (a body that
is not our envelope, an unknown name, a payload that fails validation, a relayed outbox row that
could not be decoded) goes there at once, and holds its aggregate the same way when the
envelope could be read. The hold is kept in
memory by the active consumer; see docs/guarantees/amqp.md for what a consumer restart means.

A subscription whose queue is new first receives the outbox events committed before it
existed (:mod:`dddframe.bus.amqp.backfill`): the consumer delivers them from the outbox, then
consumes the queue, skipping the first deliveries the backfill already made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import aio_pika

from dddframe.bus.amqp.backfill import advance_mark, clear_mark, pending_mark
from dddframe.bus.amqp.messages import (
    ATTEMPT,
    POSITION,
    REASON,
    REPLAYED,
    WAITING,
    from_message,
    header_int,
    to_message,
)
from dddframe.bus.amqp.topology import Topology, dlq_name, routing_keys
from dddframe.bus.attempts import attempt_delivery, log_failure
from dddframe.bus.dead_letters import format_error
from dddframe.bus.decision import (
    DeadLetter,
    DeliveryPolicy,
    Failure,
    Head,
    RetryAfter,
    WaitBehind,
    decide,
)
from dddframe.bus.delivery import lane_of
from dddframe.bus.subscription import Subscription
from dddframe.database import Database
from dddframe.domain.envelope import Envelope
from dddframe.errors import PoisonEvent
from dddframe.observability.metrics import record_dead_lettered
from dddframe.outbox.reader import OutboxReader

__all__ = ["SubscriptionConsumer"]

log = logging.getLogger("dddframe.bus.amqp.consumer")


@dataclass
class _Hold:
    """An aggregate whose messages must queue behind a retrying or dead one."""

    head: str  # the event id of the message it is held behind
    delay_ms: int = 0
    dead: bool = False
    head_pending: bool = True  # the failed message itself has not come back yet
    parked: int = 0  # waiting messages out in a delay queue


class SubscriptionConsumer:
    def __init__(
        self,
        subscription: Subscription,
        channel: aio_pika.abc.AbstractChannel,
        topology: Topology,
        *,
        concurrency: int,
        database: Database | None = None,
        backfill_batch: int = 500,
    ) -> None:
        self.subscription = subscription
        self.queue_name = topology.queue_of(subscription.name)
        self.channel = channel
        self.topology = topology
        self.concurrency = concurrency
        self.inflight = 0
        self._holds: dict[str, _Hold] = {}
        self._lanes: list[asyncio.Queue[aio_pika.abc.AbstractIncomingMessage]] = [
            asyncio.Queue() for _ in range(concurrency)
        ]
        self._workers: list[asyncio.Task[None]] = []
        self._tag: str | None = None
        self._queue: aio_pika.abc.AbstractQueue | None = None
        self.database = database
        self.backfill_batch = backfill_batch
        self.backfilling = False
        self._skip_upto: int | None = None  # first deliveries up to here came from the backfill
        self._starting: asyncio.Task[None] | None = None

    @property
    def holding(self) -> bool:
        """True while some aggregate waits for a retry (not for a dead letter), or the
        backfill of a new queue runs."""
        return self.backfilling or any(not h.dead for h in self._holds.values())

    async def start(self, prefetch: int) -> None:
        await self.channel.set_qos(prefetch_count=prefetch)
        self._queue = await self.topology.subscription_queue(
            self.channel, self.queue_name, routing_keys(self.subscription)
        )
        self._workers = [asyncio.create_task(self._lane(q)) for q in self._lanes]
        mark = None if self.database is None else await pending_mark(self.database, self.queue_name)
        if mark is None:
            self._tag = await self._queue.consume(self._receive)
            return
        self.backfilling = True
        self._starting = asyncio.create_task(self._backfill_then_consume(mark))

    async def _backfill_then_consume(self, mark: int) -> None:
        try:
            self._skip_upto = await self._backfill(mark)
            assert self._queue is not None
            self._tag = await self._queue.consume(self._receive)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: backfill from the outbox failed; restart to resume", self.queue_name)
            raise
        finally:
            self.backfilling = False

    async def _backfill(self, mark: int) -> int:
        """Deliver the outbox events of the subscription from ``mark`` up to the head read now
        (after the queue was bound), in order; returns that head."""
        assert self.database is not None
        reader = OutboxReader()
        async with self.database.connect() as conn:
            head = await reader.head(conn)
            await conn.commit()
        log.info("%s: backfilling positions %d..%d from the outbox", self.queue_name, mark, head)
        position = mark
        while position < head:
            async with self.database.connect() as conn:
                envelopes, upto = await reader.read(
                    conn,
                    after=position,
                    limit=self.backfill_batch,
                    names=self.subscription.event_names,
                )
                await conn.commit()
            for env in envelopes:
                if env.position is not None and env.position > head:
                    break
                await self._deliver_backfilled(env)
            position = min(upto, head) if upto > position else head
            await advance_mark(self.database, self.queue_name, position)
        await clear_mark(self.database, self.queue_name)
        return head

    async def _deliver_backfilled(self, env: Envelope) -> None:
        """One event from the outbox: delivered with the subscription's retries (waiting in
        place), dead-lettered (or parked behind its aggregate's dead letter) as on the queue."""
        key = env.ordering_key
        hold = self._holds.get(key)
        if hold is not None and hold.dead:
            behind = decide(self.policy, envelope=env, held_by=Head(hold.head, dead=True))
            assert isinstance(behind, WaitBehind)
            await self._publish_dlq(env, behind.error(), attempts=0, waiting=True)
            return
        number = 1
        while True:
            failed = await attempt_delivery(self.subscription, env, number, self.policy)
            if failed is None:
                return
            error, verdict = failed
            log_failure(log, self.subscription.name, env, error, verdict)
            if isinstance(verdict, RetryAfter):
                await asyncio.sleep(verdict.delay)
                number = verdict.attempt
                continue
            await self._publish_dlq(env, error, attempts=verdict.attempts)
            if verdict.holds:
                self._holds[key] = _Hold(str(env.event_id), dead=True, head_pending=False)
            return

    async def stop(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._starting
            self._starting = None
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except Exception:  # the channel may be gone already
                log.debug("cancel of %s failed", self.queue_name, exc_info=True)
        for w in self._workers:
            w.cancel()
        for w in self._workers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await w

    async def _receive(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.inflight += 1
        try:
            key = from_message(message).ordering_key
        except PoisonEvent:
            key = message.message_id or ""
        await self._lanes[lane_of(key, self.concurrency)].put(message)

    async def _lane(self, queue: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage]) -> None:
        while True:
            message = await queue.get()
            try:
                await self._handle(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Moving it failed (channel lost): leave it unacked; RabbitMQ redelivers it.
                log.exception(
                    "%s: could not settle a message; it will be redelivered", self.queue_name
                )
            finally:
                self.inflight -= 1

    @property
    def policy(self) -> DeliveryPolicy:
        return DeliveryPolicy.of(self.subscription)

    async def _handle(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        try:
            env = from_message(message)
        except PoisonEvent as exc:
            unreadable = decide(self.policy, failure=Failure.of(exc))  # no envelope: holds nothing
            assert isinstance(unreadable, DeadLetter)
            await self._to_dlq(message, exc, attempts=unreadable.attempts)
            return
        key = env.ordering_key
        if self._already_backfilled(message):
            await message.ack()
            return
        hold = self._holds.get(key)
        if hold is not None and hold.dead and header_int(message, REPLAYED) == 1:
            del self._holds[key]  # the operator replayed the dead letter and what waited
            hold = None
        waiting = header_int(message, WAITING) == 1
        attempts = header_int(message, ATTEMPT)
        if hold is not None and waiting:
            hold.parked -= 1
        fresh = not waiting and attempts == 0
        if hold is not None and (
            hold.dead
            or (hold.head_pending and (waiting or fresh))
            or (fresh and hold.parked > 0)  # earlier ones of this aggregate are still out
        ):
            behind = decide(self.policy, envelope=env, held_by=Head(hold.head, dead=hold.dead))
            assert isinstance(behind, WaitBehind)
            await self._park_behind(message, hold, behind)
            return
        failed = await attempt_delivery(self.subscription, env, attempts + 1, self.policy)
        if failed is not None:
            await self._failed(message, env, *failed)
            return
        await message.ack()
        if hold is not None and not waiting:
            hold.head_pending = False  # the retried message made it; the waiting ones follow
        self._release_if_done(key)

    def _already_backfilled(self, message: aio_pika.abc.AbstractIncomingMessage) -> bool:
        """A first delivery the backfill made already (retries and replays never are)."""
        if self._skip_upto is None:
            return False
        if header_int(message, ATTEMPT) or header_int(message, WAITING):
            return False
        if header_int(message, REPLAYED):
            return False
        return 0 < header_int(message, POSITION) <= self._skip_upto

    def _release_if_done(self, key: str) -> None:
        hold = self._holds.get(key)
        if hold is not None and not hold.dead and not hold.head_pending and hold.parked <= 0:
            del self._holds[key]

    async def _park_behind(
        self, message: aio_pika.abc.AbstractIncomingMessage, hold: _Hold, behind: WaitBehind
    ) -> None:
        if hold.dead:
            await self._to_dlq(
                message, behind.error(), attempts=header_int(message, ATTEMPT), waiting=True
            )
            return
        await self._to_delay(message, hold.delay_ms, {WAITING: 1})
        hold.parked += 1

    async def _failed(
        self,
        message: aio_pika.abc.AbstractIncomingMessage,
        env: Envelope,
        exc: BaseException,
        verdict: RetryAfter | DeadLetter,
    ) -> None:
        key = env.ordering_key
        hold = self._holds.get(key)
        log_failure(log, self.subscription.name, env, exc, verdict)
        if isinstance(verdict, DeadLetter):
            await self._to_dlq(message, exc, attempts=verdict.attempts)
            if verdict.holds:
                hold = self._holds.setdefault(key, _Hold(str(env.event_id)))
                hold.dead, hold.head_pending = True, False
            elif hold is not None:
                hold.head_pending = False
                self._release_if_done(key)
            return
        delay_ms = max(1, int(verdict.delay * 1000))
        await self._to_delay(message, delay_ms, {ATTEMPT: verdict.attempt - 1, WAITING: 0})
        hold = self._holds.setdefault(key, _Hold(str(env.event_id)))
        hold.delay_ms, hold.head_pending = delay_ms, True

    async def _republish(
        self,
        message: aio_pika.abc.AbstractIncomingMessage,
        routing_key: str,
        headers: dict[str, Any],
    ) -> None:
        copy = aio_pika.Message(
            body=message.body,
            headers={**(message.headers or {}), **headers},
            message_id=message.message_id,
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        # Confirmed before the original is acknowledged: never lost, at worst duplicated.
        await self.channel.default_exchange.publish(copy, routing_key=routing_key)
        await message.ack()

    async def _to_delay(
        self, message: aio_pika.abc.AbstractIncomingMessage, delay_ms: int, headers: dict[str, Any]
    ) -> None:
        queue = await self.topology.delay_queue(self.channel, self.queue_name, delay_ms)
        await self._republish(message, queue, headers)

    async def _to_dlq(
        self,
        message: aio_pika.abc.AbstractIncomingMessage,
        exc: BaseException | None,
        *,
        attempts: int,
        waiting: bool = False,
    ) -> None:
        headers = _dlq_headers(exc, attempts=attempts, waiting=waiting)
        await self._republish(message, dlq_name(self.queue_name), headers)
        if not waiting:
            record_dead_lettered(self.subscription.name)

    async def _publish_dlq(
        self, env: Envelope, exc: BaseException, *, attempts: int, waiting: bool = False
    ) -> None:
        """Dead-letter an event that came from the outbox, not from the queue."""
        message = to_message(env, **_dlq_headers(exc, attempts=attempts, waiting=waiting))
        await self.channel.default_exchange.publish(message, routing_key=dlq_name(self.queue_name))
        if not waiting:
            record_dead_lettered(self.subscription.name)


def _dlq_headers(exc: BaseException | None, *, attempts: int, waiting: bool) -> dict[str, Any]:
    reason = format_error(exc)[0] if exc is not None else "waiting behind a dead letter"
    return {
        REASON: reason,
        ATTEMPT: attempts,
        WAITING: 1 if waiting else 0,
        "x-dddframe-dead-at": time.time(),
        "x-dddframe-dead-id": time.time_ns() // 1000,
    }
