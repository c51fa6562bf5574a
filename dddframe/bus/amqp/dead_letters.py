"""Dead letters of the AMQP bus: the ``<subscription>.dlq`` queues, with the operator API of
:class:`~dddframe.bus.protocol.DeadLetters` (list, get, count, replay, purge), so
``app.dead_letters`` and ``dddframe dead-letters ... --app`` work the same on every bus.

Listing reads the queue and puts every message back (nack with requeue keeps the order);
replaying moves messages back to the subscription's queue, attempts reset, oldest first.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aio_pika

from dddframe.bus.amqp.messages import (
    ATTEMPT,
    REASON,
    REPLAYED,
    WAITING,
    from_message,
    header_float,
    header_int,
    header_text,
)
from dddframe.bus.amqp.topology import dlq_name
from dddframe.bus.codec import HEADER_PREFIX, encode_envelope
from dddframe.bus.dead_letters import (
    DeadLetter,
    DeadLetterOperations,
    DeadLetterSelection,
    Parked,
    oldest_first,
)
from dddframe.domain.envelope import Envelope
from dddframe.errors import PoisonEvent

__all__ = ["AmqpDeadLetters"]

Visit = Callable[[str, aio_pika.abc.AbstractIncomingMessage, Parked], Awaitable[str]]
"""Returns what to do with a message: "keep", "replay" or "drop"."""


_YEAR_10000 = 253_402_300_800.0  # seconds since the epoch; a later "dead at" is made up


def _header(headers: Mapping[str, Any], key: str) -> str:
    return header_text(headers.get(key))


def _event_id(message: aio_pika.abc.AbstractIncomingMessage) -> str:
    """The real event id of a message: its ``dddframe-event-id`` header, else its message id
    (the relay sets it to the event id); "" when neither is a UUID."""
    for candidate in (
        _header(message.headers or {}, HEADER_PREFIX + "event-id"),
        message.message_id or "",
    ):
        try:
            return str(uuid.UUID(candidate))
        except ValueError:
            continue
    return ""


def _parked(subscription: str, message: aio_pika.abc.AbstractIncomingMessage) -> Parked:
    headers = message.headers or {}
    try:
        env = from_message(message)
        event_id = str(env.event_id)
    except PoisonEvent:
        # An undecodable message keeps the event id its headers (or message id) carry; an
        # empty id when it has none, never an invented one.
        event_id = _event_id(message)
        env = Envelope(
            event_id=uuid.UUID(event_id) if event_id else uuid.UUID(int=0),
            name=_header(headers, HEADER_PREFIX + "name") or "<not a dddframe message>",
            payload_json=message.body.decode(errors="replace"),
            aggregate_type=_header(headers, HEADER_PREFIX + "aggregate-type") or None,
            aggregate_id=_header(headers, HEADER_PREFIX + "aggregate-id") or None,
        )
    stamp = header_float(message, "x-dddframe-dead-at")
    dead_at = datetime.fromtimestamp(stamp if 0 <= stamp < _YEAR_10000 else 0, UTC)
    reason = header_text(headers.get(REASON))
    return Parked(
        id=header_int(message, "x-dddframe-dead-id"),
        subscription=subscription,
        event_id=event_id,
        position=None,
        ordering_key=env.ordering_key,
        name=env.name,
        state="waiting" if header_int(message, WAITING) == 1 else "dead",
        attempts=header_int(message, ATTEMPT),
        next_attempt_at=None,
        error=reason or None,
        traceback=None,
        created_at=dead_at,
        updated_at=dead_at,
        envelope_text=encode_envelope(env),
    )


class AmqpDeadLetters(DeadLetterOperations):
    """Operator access to the dead-letter queues of the bus's subscriptions."""

    def __init__(
        self,
        channel: Callable[[], Awaitable[aio_pika.abc.AbstractChannel]],
        subscriptions: Callable[[], Sequence[str]],
        queue_of: Callable[[str], str] = lambda name: name,
    ) -> None:
        self._channel = channel
        self._subscriptions = subscriptions
        self._queue_of = queue_of

    async def _visit(self, subscription: str | None, visit: Visit) -> int:
        channel = await self._channel()
        acted = 0
        try:
            for sub in self._subscriptions():
                if subscription is not None and sub != subscription:
                    continue
                queue = await channel.declare_queue(dlq_name(self._queue_of(sub)), durable=True)
                held: list[aio_pika.abc.AbstractIncomingMessage] = []
                while (message := await queue.get(no_ack=False, fail=False)) is not None:
                    action = await visit(sub, message, _parked(sub, message))
                    if action == "keep":
                        held.append(message)
                        continue
                    acted += 1
                    if action == "replay":
                        headers = dict(message.headers or {})
                        for h in (REASON, "x-dddframe-dead-at", "x-dddframe-dead-id"):
                            headers.pop(h, None)
                        headers[ATTEMPT] = 0
                        headers[WAITING] = 0
                        headers[REPLAYED] = 1
                        await channel.default_exchange.publish(
                            aio_pika.Message(
                                body=message.body,
                                headers=headers,
                                message_id=message.message_id,
                                content_type=message.content_type,
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            ),
                            routing_key=self._queue_of(sub),
                        )
                    await message.ack()
                for message in reversed(held):  # requeue keeps their original order
                    await message.nack(requeue=True)
        finally:
            await channel.close()
        return acted

    async def select(
        self, selection: DeadLetterSelection, *, limit: int | None = None
    ) -> builtins.list[DeadLetter]:
        """The messages of the dead-letter queues the selection matches, oldest first (by when
        they were dead-lettered); ``state="waiting"``: those queued behind a dead letter."""
        found: builtins.list[DeadLetter] = []

        async def collect(sub: str, message: Any, parked: Parked) -> str:
            if selection.matches(parked):
                found.append(parked)
            return "keep"

        await self._visit(selection.subscription, collect)
        ordered = oldest_first(found)
        return ordered[:limit] if limit is not None else ordered

    async def replay_selection(self, selection: DeadLetterSelection) -> int:
        """Move dead letters (and the messages waiting behind them) back to their queue."""
        replayed_keys: set[tuple[str, str]] = set()

        async def act(sub: str, message: Any, parked: Parked) -> str:
            if selection.matches(parked) or (
                parked.state == "waiting" and (sub, parked.ordering_key) in replayed_keys
            ):
                replayed_keys.add((sub, parked.ordering_key))
                return "replay"
            return "keep"

        return await self._visit(selection.subscription, act)

    async def purge_selection(self, selection: DeadLetterSelection) -> int:
        async def act(sub: str, message: Any, parked: Parked) -> str:
            return "drop" if selection.matches(parked) else "keep"

        return await self._visit(selection.subscription, act)
