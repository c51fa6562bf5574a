"""Half messages (dddfirework DispatchBegin/Commit/Rollback, easy-bus TxOptions).

For work whose side effect is outside the database: store the events as *prepared* first, do the
side effect, then commit (deliverable) or roll back (dropped). If the process dies in between,
the prepared rows outlive it; after ``tx_check_timeout`` a checker bound by name decides.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta

from sqlalchemy import delete, insert, select, update

from dddframe.bus.listener import TxChecker
from dddframe.database import Database
from dddframe.domain.envelope import Envelope
from dddframe.domain.events import DomainEvent
from dddframe.domain.limits import check_headers
from dddframe.engine.engine import Engine
from dddframe.errors import DddframeError
from dddframe.outbox.records import envelope_to_row, row_to_envelope, utcnow
from dddframe.outbox.tables import OUTBOX_STATUS_PREPARED, OUTBOX_STATUS_READY, outbox_table

__all__ = ["HalfMessage", "HalfMessages"]

log = logging.getLogger("dddframe.bus.database.half")


class HalfMessage:
    """Prepared events: ``await commit()`` makes them deliverable, ``await rollback()`` drops
    them. Leaving ``async with bus.prepare(...)`` normally commits; an exception rolls back."""

    def __init__(self, owner: HalfMessages, envelopes: list[Envelope]) -> None:
        self._owner = owner
        self.envelopes = envelopes
        self.state = "prepared"

    @property
    def event_ids(self) -> list[str]:
        return [str(e.event_id) for e in self.envelopes]

    async def commit(self) -> None:
        if self.state == "prepared":
            await self._owner.commit(self.event_ids)
            self.state = "committed"
            self._owner.notify(self.envelopes)

    async def rollback(self) -> None:
        if self.state == "prepared":
            await self._owner.rollback(self.event_ids)
            self.state = "rolled back"


class HalfMessages:
    """Prepare, commit, roll back and check stale half messages in the outbox."""

    def __init__(
        self,
        database: Database,
        engine: Engine,
        timeout: float,
        notify: Callable[[Sequence[Envelope]], None],
    ) -> None:
        self.database = database
        self.engine = engine
        self.timeout = timeout
        self.notify = notify

    @asynccontextmanager
    async def prepare(
        self,
        events: Sequence[DomainEvent | tuple[str, Mapping[str, object]]],
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[HalfMessage]:
        if not events:
            raise DddframeError("prepare() needs at least one event")
        headers = check_headers(headers, "bus.prepare(headers=...)")
        envelopes = [
            self.engine.message(e, headers=headers, key=key)
            if isinstance(e, DomainEvent)
            else self.engine.message(e[0], dict(e[1]), headers=headers, key=key)
            for e in events
        ]
        until = utcnow() + timedelta(seconds=self.timeout)
        rows = []
        for env in envelopes:
            row = envelope_to_row(env, status=OUTBOX_STATUS_PREPARED)
            row["prepared_until"] = until
            rows.append(row)
        async with self.database.connect() as conn:
            await conn.execute(insert(outbox_table), rows)
            await conn.commit()
        tx = HalfMessage(self, envelopes)
        try:
            yield tx
        except BaseException:
            await tx.rollback()
            raise
        await tx.commit()

    async def commit(self, event_ids: list[str]) -> None:
        async with self.database.connect() as conn:
            await conn.execute(
                update(outbox_table)
                .where(
                    outbox_table.c.event_id.in_(event_ids),
                    outbox_table.c.status == OUTBOX_STATUS_PREPARED,
                )
                .values(status=OUTBOX_STATUS_READY, prepared_until=None)
            )
            await conn.commit()

    async def rollback(self, event_ids: list[str]) -> None:
        async with self.database.connect() as conn:
            await conn.execute(
                delete(outbox_table).where(
                    outbox_table.c.event_id.in_(event_ids),
                    outbox_table.c.status == OUTBOX_STATUS_PREPARED,
                )
            )
            await conn.commit()

    async def check_stale(self, checkers: Mapping[str, TxChecker]) -> int:
        """Ask the checkers about prepared rows older than the timeout; returns how many were
        decided. A row without a checker, or whose checker fails, is kept and asked again."""
        now = utcnow()
        async with self.database.connect() as conn:
            rows = (
                (
                    await conn.execute(
                        select(outbox_table)
                        .where(outbox_table.c.status == OUTBOX_STATUS_PREPARED)
                        .order_by(outbox_table.c.id)
                        .limit(500)
                    )
                )
                .mappings()
                .all()
            )
        decided = 0
        for row in rows:
            until = row["prepared_until"]
            if until is not None and until.replace(tzinfo=now.tzinfo) > now:
                continue
            env = row_to_envelope(row)
            checker = checkers.get(env.name)
            if checker is None:
                log.error(
                    "half message %s %s is stale and no tx_checker is bound for %r; it is kept",
                    env.name,
                    env.event_id,
                    env.name,
                )
                continue
            try:
                committed = await checker(env)
            except Exception:
                log.exception(
                    "tx_checker for %s %s failed; asking again later", env.name, env.event_id
                )
                continue
            if committed:
                await self.commit([str(env.event_id)])
                self.notify([env])
            else:
                await self.rollback([str(env.event_id)])
            decided += 1
        return decided
