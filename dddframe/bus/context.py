"""What a listener gets besides the event: the envelope, the attempt and follow-up commands."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dddframe.domain.envelope import CAUSATION_ID, CORRELATION_ID, Envelope
from dddframe.domain.events import DomainEvent
from dddframe.domain.limits import check_headers
from dddframe.engine.command import Command
from dddframe.outbox.records import utcnow
from dddframe.outbox.tables import inbox_table

if TYPE_CHECKING:
    from dddframe.engine.engine import Engine

__all__ = ["EventContext", "Inbox"]


@dataclass(frozen=True, slots=True)
class Inbox:
    """The inbox entry of one delivery: ``(consumer, message_id)``.

    For listeners that write to the database themselves: ``await ctx.inbox.claim(session)``
    inserts the entry in *your* transaction and returns False when the event was applied before,
    so the effects and the record commit or roll back together. ``ctx.run()`` does this for you.
    """

    consumer: str
    message_id: str

    async def claim(self, session: AsyncSession) -> bool:
        try:
            async with session.begin_nested():
                await session.execute(
                    insert(inbox_table).values(
                        consumer=self.consumer, message_id=self.message_id, processed_at=utcnow()
                    )
                )
        except IntegrityError:
            return False
        return True

    async def seen(self, session: AsyncSession) -> bool:
        found = await session.scalar(
            select(inbox_table.c.message_id).where(
                inbox_table.c.consumer == self.consumer,
                inbox_table.c.message_id == self.message_id,
            )
        )
        return found is not None


@dataclass(slots=True)
class EventContext:
    """Passed to a listener that declares a parameter annotated ``EventContext``.

    ``await ctx.run(ReserveStock(...))`` runs a follow-up command with the same correlation id and
    ``causation_id`` = this event's id. It is idempotent by default: the event id (and the index
    of the call within this delivery) goes into the inbox in the command's own transaction, so a
    redelivered event does not run the command twice.
    """

    envelope: Envelope
    attempt: int
    subscription: str
    engine: Engine
    _runs: int = field(default=0, repr=False)

    @property
    def headers(self) -> dict[str, str]:
        return self.envelope.headers

    @property
    def event_id(self) -> str:
        return str(self.envelope.event_id)

    @property
    def inbox(self) -> Inbox:
        return Inbox(self.subscription, self.event_id)

    def _follow_up_headers(self) -> dict[str, str]:
        return {
            CORRELATION_ID: self.envelope.correlation_id or self.event_id,
            CAUSATION_ID: self.event_id,
        }

    async def run(
        self,
        command: Command,
        *,
        lock_keys: Iterable[str] = (),
        idempotent: bool = True,
    ) -> Any:
        """Run a follow-up command; returns None if a redelivery already applied it."""
        index = self._runs
        self._runs += 1
        inbox = (self.subscription, f"{self.event_id}:{index}") if idempotent else None
        return await self.engine.run(
            command, lock_keys=lock_keys, headers=self._follow_up_headers(), inbox=inbox
        )

    async def publish(
        self,
        name: str | DomainEvent,
        payload: Mapping[str, Any] | None = None,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Envelope:
        """Publish a direct message carrying this event's correlation and causation ids.

        The same signature as ``app.publish`` and ``engine.publish``; ``headers`` win over the
        ids carried from this event.
        """
        merged = {**self._follow_up_headers(), **check_headers(headers, "ctx.publish(headers=...)")}
        return await self.engine.publish(name, payload, key=key, headers=merged)
