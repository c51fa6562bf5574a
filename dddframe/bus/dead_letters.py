"""The parking lot and dead-letter store in the database (``dddframe_parked``).

A subscription parks an event it could not deliver: ``retry`` (waiting for its next attempt),
``dead`` (retries ran out: a dead letter) or ``waiting`` (a later event of the same aggregate
queued behind one of those, so order per aggregate holds). Operators list, show, replay and purge
dead letters through :class:`DeadLetterStore` (``app.dead_letters``) or the CLI.
"""

from __future__ import annotations

import builtins
import traceback as _tb
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from dddframe.bus.codec import decode_envelope, encode_envelope
from dddframe.database import Database
from dddframe.domain.envelope import Envelope
from dddframe.errors import DeadLetterNotFound
from dddframe.outbox.records import utcnow
from dddframe.outbox.tables import PARKED_DEAD, PARKED_RETRY, PARKED_WAITING, parked_table

__all__ = ["DeadLetter", "DeadLetterSelection", "DeadLetterStore", "Parked", "format_error"]

_MAX_ERROR = 2000


def format_error(exc: BaseException) -> tuple[str, str]:
    """(one-line reason, traceback) of an exception, for storage."""
    reason = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR]
    return reason, "".join(_tb.format_exception(exc))[-20000:]


@dataclass(frozen=True, slots=True)
class Parked:
    """One parked event of one subscription."""

    id: int
    subscription: str
    event_id: str
    position: int | None
    ordering_key: str
    name: str
    state: str
    attempts: int
    next_attempt_at: datetime | None
    error: str | None
    traceback: str | None
    created_at: datetime
    updated_at: datetime
    envelope_text: str

    @property
    def envelope(self) -> Envelope:
        return decode_envelope(self.envelope_text)


DeadLetter = Parked
"""A parked event in state ``dead``: what operators list, inspect and replay."""


@dataclass(frozen=True, slots=True)
class DeadLetterSelection:
    """Which dead letters ``replay`` or ``purge`` act on; every store (database, Kafka topics,
    AMQP queues) selects the same way. Nothing named is an error, so that a forgotten filter
    never replays or deletes everything.

    >>> DeadLetterSelection.of(None, subscription="store.*", aggregate_id=None, everything=False)
    DeadLetterSelection(ids=None, subscription='store.*', aggregate_id=None, everything=False)
    """

    ids: frozenset[int] | None
    subscription: str | None
    aggregate_id: str | None
    everything: bool

    @classmethod
    def of(
        cls,
        ids: Sequence[int] | None,
        *,
        subscription: str | None,
        aggregate_id: str | None,
        everything: bool,
    ) -> DeadLetterSelection:
        if ids is None and subscription is None and aggregate_id is None and not everything:
            raise ValueError(
                "Name the dead letters: ids, a subscription, an aggregate id, or everything=True"
            )
        return cls(
            frozenset(ids) if ids is not None else None, subscription, aggregate_id, everything
        )

    def matches(self, letter: Parked) -> bool:
        """For stores that scan their dead letters (Kafka topics, AMQP queues)."""
        return (
            (self.ids is None or letter.id in self.ids)
            and (self.subscription is None or letter.subscription == self.subscription)
            and (self.aggregate_id is None or letter.ordering_key.endswith(f":{self.aggregate_id}"))
        )


def _row(r: object) -> Parked:
    m = r._mapping  # type: ignore[attr-defined]
    return Parked(
        id=m["id"],
        subscription=m["subscription"],
        event_id=m["event_id"],
        position=m["position"],
        ordering_key=m["ordering_key"],
        name=m["name"],
        state=m["state"],
        attempts=m["attempts"],
        next_attempt_at=m["next_attempt_at"],
        error=m["error"],
        traceback=m["traceback"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        envelope_text=m["envelope"],
    )


class DeadLetterStore:
    """Parked events in the database: the runners' bookkeeping and the operator's API."""

    def __init__(self, database: Database) -> None:
        self.database = database

    # -- used by subscription runners -------------------------------------------------------

    async def park(
        self,
        conn: AsyncConnection,
        subscription: str,
        envelope: Envelope,
        *,
        state: str,
        attempts: int,
        delay: float | None = None,
        error: BaseException | None = None,
    ) -> bool:
        """Insert a parked row; False if this event is parked for the subscription already."""
        now = utcnow()
        reason, tb = format_error(error) if error is not None else (None, None)
        try:
            async with conn.begin_nested():
                await conn.execute(
                    insert(parked_table).values(
                        subscription=subscription,
                        event_id=str(envelope.event_id),
                        position=envelope.position,
                        ordering_key=envelope.ordering_key,
                        name=envelope.name,
                        envelope=encode_envelope(envelope),
                        state=state,
                        attempts=attempts,
                        next_attempt_at=now + timedelta(seconds=delay) if delay else now,
                        error=reason,
                        traceback=tb,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            return False
        return True

    async def set_state(
        self,
        conn: AsyncConnection,
        parked_id: int,
        *,
        state: str,
        attempts: int,
        delay: float | None = None,
        error: BaseException | None = None,
    ) -> None:
        now = utcnow()
        values: dict[str, object] = {
            "state": state,
            "attempts": attempts,
            "next_attempt_at": now + timedelta(seconds=delay or 0),
            "updated_at": now,
        }
        if error is not None:
            values["error"], values["traceback"] = format_error(error)
        await conn.execute(
            update(parked_table).where(parked_table.c.id == parked_id).values(values)
        )

    async def remove(self, conn: AsyncConnection, parked_id: int) -> None:
        await conn.execute(delete(parked_table).where(parked_table.c.id == parked_id))

    async def heads(
        self, conn: AsyncConnection, subscription: str, *, include_dead: bool
    ) -> list[Parked]:
        """The first parked row of every ordering key of a subscription."""
        cond = parked_table.c.subscription == subscription
        if not include_dead:
            cond = and_(cond, parked_table.c.state != PARKED_DEAD)
        first = (
            select(func.min(parked_table.c.id).label("id"))
            .where(cond)
            .group_by(parked_table.c.ordering_key)
            .subquery()
        )
        q = select(parked_table).join(first, parked_table.c.id == first.c.id)
        return [_row(r) for r in (await conn.execute(q)).all()]

    async def first_of_key(
        self, conn: AsyncConnection, subscription: str, key: str, *, include_dead: bool
    ) -> Parked | None:
        q = select(parked_table).where(
            parked_table.c.subscription == subscription, parked_table.c.ordering_key == key
        )
        if not include_dead:
            q = q.where(parked_table.c.state != PARKED_DEAD)
        r = (await conn.execute(q.order_by(parked_table.c.id).limit(1))).first()
        return _row(r) if r is not None else None

    # -- operator API ---------------------------------------------------------------------

    async def list(
        self,
        *,
        subscription: str | None = None,
        aggregate_id: str | None = None,
        state: str | None = PARKED_DEAD,
        limit: int = 100,
    ) -> list[DeadLetter]:
        """Dead letters (or, with ``state=None``, every parked event), oldest first."""
        q = select(parked_table).order_by(parked_table.c.id).limit(limit)
        if state is not None:
            q = q.where(parked_table.c.state == state)
        if subscription is not None:
            q = q.where(parked_table.c.subscription == subscription)
        if aggregate_id is not None:
            q = q.where(parked_table.c.ordering_key.like(f"%:{aggregate_id}"))
        async with self.database.connect() as conn:
            return [_row(r) for r in (await conn.execute(q)).all()]

    async def get(self, dead_letter_id: int) -> DeadLetter:
        async with self.database.connect() as conn:
            r = (
                await conn.execute(select(parked_table).where(parked_table.c.id == dead_letter_id))
            ).first()
        if r is None:
            raise DeadLetterNotFound(
                f"No parked event with id {dead_letter_id}; it may have been replayed or "
                "purged. List them with `dddframe dead-letters list`."
            )
        return _row(r)

    async def count(self, *, subscription: str | None = None, state: str = PARKED_DEAD) -> int:
        q = select(func.count()).select_from(parked_table).where(parked_table.c.state == state)
        if subscription is not None:
            q = q.where(parked_table.c.subscription == subscription)
        async with self.database.connect() as conn:
            return int(await conn.scalar(q) or 0)

    def _filter(
        self,
        ids: Sequence[int] | None,
        subscription: str | None,
        aggregate_id: str | None,
        everything: bool,
    ) -> builtins.list[Any]:
        sel = DeadLetterSelection.of(
            ids, subscription=subscription, aggregate_id=aggregate_id, everything=everything
        )
        cond: builtins.list[Any] = [parked_table.c.state == PARKED_DEAD]
        if sel.ids is not None:
            cond.append(parked_table.c.id.in_(sorted(sel.ids)))
        if sel.subscription is not None:
            cond.append(parked_table.c.subscription == sel.subscription)
        if sel.aggregate_id is not None:
            cond.append(parked_table.c.ordering_key.like(f"%:{sel.aggregate_id}"))
        return cond

    async def replay(
        self,
        ids: Sequence[int] | None = None,
        *,
        subscription: str | None = None,
        aggregate_id: str | None = None,
        everything: bool = False,
    ) -> int:
        """Make dead letters due for delivery again (attempts reset); returns how many.

        The running subscription delivers them, then releases the events waiting behind them.
        """
        cond = self._filter(ids, subscription, aggregate_id, everything)
        async with self.database.connect() as conn:
            result = await conn.execute(
                update(parked_table)
                .where(*cond)
                .values(state=PARKED_RETRY, attempts=0, next_attempt_at=utcnow())
            )
            await conn.commit()
        return int(result.rowcount or 0)

    async def purge(
        self,
        ids: Sequence[int] | None = None,
        *,
        subscription: str | None = None,
        aggregate_id: str | None = None,
        everything: bool = False,
    ) -> int:
        """Delete dead letters for good; events waiting behind them are then delivered."""
        cond = self._filter(ids, subscription, aggregate_id, everything)
        async with self.database.connect() as conn:
            result = await conn.execute(delete(parked_table).where(*cond))
            await conn.commit()
        return int(result.rowcount or 0)

    async def pending_retries(self, subscription: str) -> int:
        q = (
            select(func.count())
            .select_from(parked_table)
            .where(
                parked_table.c.subscription == subscription,
                parked_table.c.state.in_([PARKED_RETRY, PARKED_WAITING]),
            )
        )
        async with self.database.connect() as conn:
            return int(await conn.scalar(q) or 0)
