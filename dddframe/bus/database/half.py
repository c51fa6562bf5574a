"""Half messages (dddfirework DispatchBegin/Commit/Rollback, easy-bus TxOptions).

For work whose side effect is outside the database: store the events as *prepared* first, do the
side effect, then commit (deliverable) or roll back (dropped). If the process dies in between,
the prepared rows outlive it; after ``tx_check_timeout`` a checker bound by name decides.

A live preparer renews ``prepared_until`` while it is inside the block, so the checker never
decides for a preparer that is merely slow. If it decides anyway (the preparer's process
stalled for longer than the timeout), the preparer's own commit or rollback that disagrees
raises :class:`~dddframe.errors.HalfMessageDecided`: never a silent loss. See
docs/adr/0102-half-message-decisions.md.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from dddframe.errors import HalfMessageDecided, InvalidArgument
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
        """Make the events deliverable; :class:`~dddframe.errors.HalfMessageDecided` if the
        tx_checker rolled them back first."""
        if self.state == "prepared":
            try:
                await self._owner.commit(self.event_ids)
            except HalfMessageDecided:
                self.state = "rolled back by the checker"
                raise
            self.state = "committed"
            self._owner.notify(self.envelopes)

    async def rollback(self) -> None:
        """Drop the events; :class:`~dddframe.errors.HalfMessageDecided` if the tx_checker
        committed them first."""
        if self.state == "prepared":
            try:
                await self._owner.rollback(self.event_ids)
            except HalfMessageDecided:
                self.state = "committed by the checker"
                raise
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
            raise InvalidArgument("prepare() needs at least one event: pass the events to publish")
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
        renew = (
            asyncio.create_task(self._renew(tx.event_ids), name="dddframe-half-renew")
            if self.timeout > 0
            else None
        )
        try:
            try:
                yield tx
            finally:
                if renew is not None:
                    renew.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await renew
        except BaseException:
            await tx.rollback()
            raise
        await tx.commit()

    async def commit(self, event_ids: list[str], *, by_checker: bool = False) -> bool:
        """Make the prepared rows deliverable. False when they were no longer prepared (the
        other side decided first); the preparer (``by_checker=False``) then gets
        :class:`~dddframe.errors.HalfMessageDecided` unless they were committed already."""
        async with self.database.connect() as conn:
            result = await conn.execute(
                update(outbox_table)
                .where(
                    outbox_table.c.event_id.in_(event_ids),
                    outbox_table.c.status == OUTBOX_STATUS_PREPARED,
                )
                .values(status=OUTBOX_STATUS_READY, prepared_until=None)
            )
            await conn.commit()
        if int(result.rowcount or 0) == len(event_ids):
            return True
        if by_checker:
            return False
        left = await self._stored(event_ids)
        if len(left) < len(event_ids):
            raise HalfMessageDecided(
                f"Half message {', '.join(sorted(set(event_ids) - left))} was rolled back by "
                f"its tx_checker before this commit: its prepare() block outlived "
                f"tx_check_timeout={self.timeout:g} s while the process was stalled, and the "
                "checker answered False. Nothing will be delivered for it: undo or re-check "
                "the side effect, or raise tx_check_timeout."
            )
        return True  # the checker committed them already: what the preparer wanted

    async def rollback(self, event_ids: list[str], *, by_checker: bool = False) -> bool:
        """Drop the prepared rows. False when they were no longer prepared; the preparer then
        gets :class:`~dddframe.errors.HalfMessageDecided` if the checker committed them."""
        async with self.database.connect() as conn:
            result = await conn.execute(
                delete(outbox_table).where(
                    outbox_table.c.event_id.in_(event_ids),
                    outbox_table.c.status == OUTBOX_STATUS_PREPARED,
                )
            )
            await conn.commit()
        if int(result.rowcount or 0) == len(event_ids):
            return True
        if by_checker:
            return False
        committed = await self._stored(event_ids)
        if committed:
            raise HalfMessageDecided(
                f"Half message {', '.join(sorted(committed))} was committed by its tx_checker "
                f"before this rollback (the prepare() block outlived tx_check_timeout="
                f"{self.timeout:g} s while the process was stalled): the events are delivered. "
                "Compensate for them, or raise tx_check_timeout."
            )
        return True

    async def _stored(self, event_ids: list[str]) -> set[str]:
        async with self.database.connect() as conn:
            found = await conn.scalars(
                select(outbox_table.c.event_id).where(outbox_table.c.event_id.in_(event_ids))
            )
            return {str(e) for e in found}

    async def _renew(self, event_ids: list[str]) -> None:
        """While the preparer is inside its block: push ``prepared_until`` ahead every third of
        the timeout, so the checker only ever judges preparers that stopped."""
        while True:
            await asyncio.sleep(self.timeout / 3)
            try:
                async with self.database.connect() as conn:
                    result = await conn.execute(
                        update(outbox_table)
                        .where(
                            outbox_table.c.event_id.in_(event_ids),
                            outbox_table.c.status == OUTBOX_STATUS_PREPARED,
                        )
                        .values(prepared_until=utcnow() + timedelta(seconds=self.timeout))
                    )
                    await conn.commit()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("could not renew half message %s; retrying", event_ids, exc_info=True)
                continue
            if int(result.rowcount or 0) == 0:
                return  # decided by the checker: commit/rollback will say so

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
                if await self.commit([str(env.event_id)], by_checker=True):
                    self.notify([env])
                    decided += 1
            elif await self.rollback([str(env.event_id)], by_checker=True):
                decided += 1
        return decided
