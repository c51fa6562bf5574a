"""The parking lot and dead-letter store in the database (``dddframe_parked``).

The in-process and database buses park here what a subscription could not deliver (``retry``,
``dead``, ``waiting``); :class:`DeadLetterStore` is their runners' bookkeeping and, through
:class:`~dddframe.bus.dead_letters.DeadLetterOperations`, the operator's API of those dead
letters.
"""

from __future__ import annotations

import builtins
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from dddframe.bus.codec import encode_envelope
from dddframe.bus.dead_letters import (
    DeadLetter,
    DeadLetterOperations,
    DeadLetterSelection,
    Parked,
    format_error,
)
from dddframe.database import Database
from dddframe.domain.envelope import Envelope
from dddframe.errors import NotStarted
from dddframe.outbox.records import utcnow
from dddframe.outbox.tables import PARKED_DEAD, PARKED_RETRY, parked_table

__all__ = ["DeadLetterStore"]


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


class DeadLetterStore(DeadLetterOperations):
    """Parked events in the database: the runners' bookkeeping and the operator's API (the
    dead letters of the in-process and database buses)."""

    def __init__(self, database: Database | None = None) -> None:
        self._database = database

    @property
    def database(self) -> Database:
        if self._database is None:
            raise NotStarted(
                "The dead-letter store is not bound to a database yet: start the Application "
                "(`async with Application(...) as app:`) and create the schema first."
            )
        return self._database

    def bind(self, database: Database) -> None:
        """Use ``database`` (a bus binds the store it is handed when it starts)."""
        self._database = database

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

    @staticmethod
    def _where(selection: DeadLetterSelection) -> builtins.list[Any]:
        cond: builtins.list[Any] = []
        if selection.state is not None:
            cond.append(parked_table.c.state == selection.state)
        if selection.ids is not None:
            cond.append(parked_table.c.id.in_(sorted(selection.ids)))
        if selection.subscription is not None:
            cond.append(parked_table.c.subscription == selection.subscription)
        if selection.aggregate_id is not None:
            cond.append(parked_table.c.ordering_key.like(f"%:{selection.aggregate_id}"))
        return cond

    async def select(
        self, selection: DeadLetterSelection, *, limit: int | None = None
    ) -> builtins.list[DeadLetter]:
        q = select(parked_table).where(*self._where(selection)).order_by(parked_table.c.id)
        if limit is not None:
            q = q.limit(limit)
        async with self.database.connect() as conn:
            return [_row(r) for r in (await conn.execute(q)).all()]

    async def count(
        self, *, subscription: str | None = None, state: str | None = PARKED_DEAD
    ) -> int:
        selection = DeadLetterSelection.listing(subscription=subscription, state=state)
        q = select(func.count()).select_from(parked_table).where(*self._where(selection))
        async with self.database.connect() as conn:
            return int(await conn.scalar(q) or 0)

    async def replay_selection(self, selection: DeadLetterSelection) -> int:
        async with self.database.connect() as conn:
            result = await conn.execute(
                update(parked_table)
                .where(*self._where(selection))
                .values(state=PARKED_RETRY, attempts=0, next_attempt_at=utcnow())
            )
            await conn.commit()
        return int(result.rowcount or 0)

    async def purge_selection(self, selection: DeadLetterSelection) -> int:
        async with self.database.connect() as conn:
            result = await conn.execute(delete(parked_table).where(*self._where(selection)))
            await conn.commit()
        return int(result.rowcount or 0)
