"""Dead letters of the AMQP bus: the ``<subscription>.dlq`` queues, with the operator API of
:class:`~dddframe.bus.dead_letters.DeadLetterStore` (list, get, replay, purge), so
``app.dead_letters`` and ``dddframe dead-letters ... --app`` work the same on every bus.

Listing reads the queue and puts every message back (nack with requeue keeps the order);
replaying moves messages back to the subscription's queue, attempts reset, oldest first.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import aio_pika

from dddframe.bus.amqp.messages import (
    ATTEMPT,
    REASON,
    REPLAYED,
    WAITING,
    from_message,
    header_int,
)
from dddframe.bus.amqp.topology import dlq_name
from dddframe.bus.codec import encode_envelope
from dddframe.bus.dead_letters import DeadLetter, DeadLetterSelection, Parked
from dddframe.domain.envelope import Envelope
from dddframe.errors import DeadLetterNotFound, PoisonEvent

__all__ = ["AmqpDeadLetters"]

Visit = Callable[[str, aio_pika.abc.AbstractIncomingMessage, Parked], Awaitable[str]]
"""Returns what to do with a message: "keep", "replay" or "drop"."""


def _parked(subscription: str, message: aio_pika.abc.AbstractIncomingMessage) -> Parked:
    headers = message.headers or {}
    try:
        env = from_message(message)
    except PoisonEvent:
        env = Envelope(
            event_id=uuid.UUID(int=0),
            name=str(headers.get("dddframe-name", "?")),
            payload_json=message.body.decode(errors="replace"),
        )
    dead_at = datetime.fromtimestamp(float(headers.get("x-dddframe-dead-at", 0) or 0), UTC)  # type: ignore[arg-type]
    reason = headers.get(REASON)
    return Parked(
        id=header_int(message, "x-dddframe-dead-id"),
        subscription=subscription,
        event_id=str(env.event_id),
        position=None,
        ordering_key=env.ordering_key,
        name=env.name,
        state="waiting" if header_int(message, WAITING) == 1 else "dead",
        attempts=header_int(message, ATTEMPT),
        next_attempt_at=None,
        error=reason.decode() if isinstance(reason, bytes) else (str(reason) if reason else None),
        traceback=None,
        created_at=dead_at,
        updated_at=dead_at,
        envelope_text=encode_envelope(env),
    )


class AmqpDeadLetters:
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

    async def list(
        self,
        *,
        subscription: str | None = None,
        aggregate_id: str | None = None,
        state: str | None = "dead",
        limit: int = 100,
    ) -> builtins.list[DeadLetter]:
        found: builtins.list[DeadLetter] = []

        async def collect(sub: str, message: Any, parked: Parked) -> str:
            if (state is None or parked.state == state) and (
                aggregate_id is None or parked.ordering_key.endswith(f":{aggregate_id}")
            ):
                found.append(parked)
            return "keep"

        await self._visit(subscription, collect)
        return found[:limit]

    async def get(self, dead_letter_id: int) -> DeadLetter:
        for d in await self.list(state=None, limit=10**9):
            if d.id == dead_letter_id:
                return d
        raise DeadLetterNotFound(
            f"No dead letter with id {dead_letter_id}; it may have been replayed or purged. "
            "List them with `dddframe dead-letters list`."
        )

    async def count(self, *, subscription: str | None = None, state: str = "dead") -> int:
        return len(await self.list(subscription=subscription, state=state, limit=10**9))

    async def replay(
        self,
        ids: Sequence[int] | None = None,
        *,
        subscription: str | None = None,
        aggregate_id: str | None = None,
        everything: bool = False,
    ) -> int:
        """Move dead letters (and the messages waiting behind them) back to their queue."""
        match = DeadLetterSelection.of(
            ids, subscription=subscription, aggregate_id=aggregate_id, everything=everything
        ).matches
        replayed_keys: set[tuple[str, str]] = set()

        async def act(sub: str, message: Any, parked: Parked) -> str:
            if match(parked) or (
                parked.state == "waiting" and (sub, parked.ordering_key) in replayed_keys
            ):
                replayed_keys.add((sub, parked.ordering_key))
                return "replay"
            return "keep"

        return await self._visit(subscription, act)

    async def purge(
        self,
        ids: Sequence[int] | None = None,
        *,
        subscription: str | None = None,
        aggregate_id: str | None = None,
        everything: bool = False,
    ) -> int:
        match = DeadLetterSelection.of(
            ids, subscription=subscription, aggregate_id=aggregate_id, everything=everything
        ).matches

        async def act(sub: str, message: Any, parked: Parked) -> str:
            return "drop" if match(parked) else "keep"

        return await self._visit(subscription, act)
