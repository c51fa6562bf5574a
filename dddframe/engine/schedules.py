"""Scheduled commands: a command stored now and run by a worker at its due time.

``await app.schedule(command, after=timedelta(minutes=15))`` (or ``at=<aware datetime>``) stores
the command in ``dddframe_schedules`` and returns its id. Inside a unit of work (a handler, or a
listener's ``ctx.run``) the row is written in that transaction, so a command that rolls back
schedules nothing. ``await app.cancel_schedule(id)`` cancels one that has not run.

Workers dispatch due schedules (:class:`ScheduleDispatcher`): one dispatcher per database at a
time holds the ``dddframe.schedules`` lease, and another worker takes over when its owner dies.
A dispatcher marks a schedule ``running`` before it runs the command, so a cancellation either
stops it before that (``cancel_schedule`` answers True) or comes too late (False); a schedule
left ``running`` by a dispatcher that died is put back by the next one to take the lease.
Each schedule runs through ``engine.run`` with the inbox entry ``("dddframe.schedule", id)``, in
the command's own transaction, so a schedule dispatched twice (its dispatcher died between the
command's commit and marking it done, or lost the lease meanwhile) has its effect once. A
command that fails is tried again after a back-off (1, 2, 4 ... 60 s) and marked ``failed``
with the error after ``max_attempts``; a schedule whose command type no longer exists fails at
once, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from dddframe.database import Database
from dddframe.engine.command import Command
from dddframe.engine.unit_of_work import current_unit_of_work
from dddframe.errors import (
    ConcurrencyConflict,
    DatabaseUnavailable,
    DddframeError,
    InvalidArgument,
    ScheduleNotFound,
    UsageError,
)
from dddframe.ids import uuid7
from dddframe.outbox.leases import Leases
from dddframe.outbox.records import as_utc, utcnow
from dddframe.outbox.tables import schedules_table

if TYPE_CHECKING:
    from dddframe.engine.engine import Engine

__all__ = [
    "SCHEDULE_STATES",
    "Schedule",
    "ScheduleDispatcher",
    "Schedules",
    "command_name",
]

log = logging.getLogger("dddframe.schedules")

PENDING, RUNNING, DONE = "pending", "running", "done"
CANCELLED, FAILED = "cancelled", "failed"
SCHEDULE_STATES = (PENDING, RUNNING, DONE, CANCELLED, FAILED)
INBOX_CONSUMER = "dddframe.schedule"
LEASE = "dddframe.schedules"
_MAX_ERROR = 2000


def command_name(command_type: type[Command]) -> str:
    """The stored name of a command type: its module and qualified name.

    >>> class Remind(Command):
    ...     pass
    >>> command_name(Remind)
    'dddframe.engine.schedules.Remind'
    """
    return f"{command_type.__module__}.{command_type.__qualname__}"


@dataclass(frozen=True, slots=True)
class Schedule:
    """A scheduled command as stored."""

    id: uuid.UUID
    command: str
    payload: str
    headers: str
    due_at: datetime
    state: str
    attempts: int
    error: str | None
    created_at: datetime
    updated_at: datetime


def _row(r: Any) -> Schedule:
    m = r._mapping
    return Schedule(
        id=uuid.UUID(m["id"]),
        command=m["command"],
        payload=m["payload"],
        headers=m["headers"],
        due_at=as_utc(m["due_at"]),
        state=m["state"],
        attempts=m["attempts"],
        error=m["error"],
        created_at=as_utc(m["created_at"]),
        updated_at=as_utc(m["updated_at"]),
    )


def due_time(at: datetime | None, after: timedelta | None) -> datetime:
    """The due time of ``at=`` or ``after=`` (exactly one), checked.

    >>> due_time(None, timedelta(0)) <= utcnow()
    True
    >>> due_time(datetime(2030, 1, 1), None)
    Traceback (most recent call last):
    ...
    dddframe.errors.InvalidArgument: schedule(at=...) needs a timezone-aware datetime such as \
datetime(2030, 1, 1, tzinfo=UTC), not the naive 2030-01-01 00:00:00.
    """
    if (at is None) == (after is None):
        raise InvalidArgument(
            "schedule() takes exactly one of at=<aware datetime> or after=<timedelta>."
        )
    if after is not None:
        if not isinstance(after, timedelta) or after < timedelta(0):
            raise InvalidArgument(
                f"schedule(after=...) needs a timedelta of 0 or more, not {after!r}."
            )
        return utcnow() + after
    if not isinstance(at, datetime):
        raise InvalidArgument(f"schedule(at=...) needs a datetime, not {at!r}.")
    if at.tzinfo is None:
        raise InvalidArgument(
            "schedule(at=...) needs a timezone-aware datetime such as "
            f"datetime(2030, 1, 1, tzinfo=UTC), not the naive {at}."
        )
    return at.astimezone(UTC)


class Schedules:
    """Store, cancel and list scheduled commands (``app.schedule``, ``app.cancel_schedule``,
    ``dddframe schedules``)."""

    def __init__(self, database: Database, commands: Sequence[type[Command]]) -> None:
        self.database = database
        self.commands = {command_name(c): c for c in commands}

    async def schedule(
        self,
        command: Command,
        *,
        at: datetime | None = None,
        after: timedelta | None = None,
        headers: dict[str, str] | None = None,
    ) -> uuid.UUID:
        """Store ``command`` to run at ``at`` or ``after`` from now; returns its id. Inside a
        unit of work it is written in that transaction."""
        if not isinstance(command, Command):
            raise UsageError(f"schedule() takes a Command instance, not {type(command).__name__}.")
        name = command_name(type(command))
        if name not in self.commands:
            raise UsageError(
                f"No module handles {type(command).__name__}: a scheduled command needs a "
                f"handler (@module.handles({type(command).__name__}))."
            )
        due = due_time(at, after)
        schedule_id = uuid7()
        now = utcnow()
        values = {
            "id": str(schedule_id),
            "command": name,
            "payload": command.model_dump_json(),
            "headers": json.dumps(headers or {}, separators=(",", ":")),
            "due_at": due,
            "state": PENDING,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
        uow = current_unit_of_work.get()
        if uow is not None:  # joins the running command's transaction
            await uow.session.execute(insert(schedules_table).values(**values))
        else:
            async with self.database.connect() as conn:
                await conn.execute(insert(schedules_table).values(**values))
                await conn.commit()
        return schedule_id

    async def cancel(self, schedule_id: uuid.UUID | str) -> bool:
        """Cancel a pending schedule: True when it was pending, False when it had run, failed
        or was cancelled already; :class:`~dddframe.errors.ScheduleNotFound` when unknown."""
        key = _schedule_key(schedule_id)
        async with self.database.connect() as conn:
            done = await conn.execute(
                update(schedules_table)
                .where(schedules_table.c.id == key, schedules_table.c.state == PENDING)
                .values(state=CANCELLED, updated_at=utcnow())
            )
            found = done.rowcount == 1 or await _exists(conn, key)
            await conn.commit()
        if not found:
            raise ScheduleNotFound(
                f"No scheduled command has the id {key}; `dddframe schedules list --all` "
                "shows them."
            )
        return bool(done.rowcount == 1)

    async def get(self, schedule_id: uuid.UUID | str) -> Schedule:
        key = _schedule_key(schedule_id)
        async with self.database.connect() as conn:
            row = (
                await conn.execute(select(schedules_table).where(schedules_table.c.id == key))
            ).first()
        if row is None:
            raise ScheduleNotFound(f"No scheduled command has the id {key}.")
        return _row(row)

    async def list(self, *, states: Sequence[str] = (PENDING,), limit: int = 100) -> list[Schedule]:
        """Schedules in these states, soonest due first."""
        unknown = [s for s in states if s not in SCHEDULE_STATES]
        if unknown:
            raise InvalidArgument(
                f"Unknown schedule state {unknown[0]!r}; use {', '.join(SCHEDULE_STATES)}."
            )
        query = (
            select(schedules_table)
            .where(schedules_table.c.state.in_(list(states)))
            .order_by(schedules_table.c.due_at, schedules_table.c.id)
            .limit(limit)
        )
        async with self.database.connect() as conn:
            return [_row(r) for r in await conn.execute(query)]

    async def oldest_overdue(self) -> datetime | None:
        """The due time of the oldest pending schedule that is due, or None."""
        async with self.database.connect() as conn:
            oldest = await conn.scalar(
                select(func.min(schedules_table.c.due_at)).where(
                    schedules_table.c.state == PENDING, schedules_table.c.due_at <= utcnow()
                )
            )
        return as_utc(oldest) if oldest is not None else None


def _headers(text: str) -> dict[str, str]:
    """The stored headers (the correlation id of the scheduling command); {} if unreadable."""
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(found, dict):
        return {}
    return {str(k): str(v) for k, v in found.items() if isinstance(v, str)}


def _schedule_key(schedule_id: uuid.UUID | str) -> str:
    try:
        return str(uuid.UUID(str(schedule_id)))
    except ValueError:
        raise InvalidArgument(
            f"A schedule id is a UUID such as 0190f1c2-...; {str(schedule_id)[:60]!r} is not."
        ) from None


async def _exists(conn: AsyncConnection, key: str) -> bool:
    found = await conn.scalar(select(schedules_table.c.id).where(schedules_table.c.id == key))
    return found is not None


class ScheduleDispatcher:
    """Runs due schedules through the engine, one dispatcher per database (a lease)."""

    def __init__(
        self,
        schedules: Schedules,
        engine: Engine,
        *,
        owner: str,
        poll_interval: float = 0.5,
        lease_ttl: float = 10.0,
        batch_size: int = 100,
        max_attempts: int = 10,
    ) -> None:
        self.schedules = schedules
        self.engine = engine
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.dispatched = 0
        self._holding = False
        self._leases = Leases(schedules.database, owner, lease_ttl)
        self._renew_every = lease_ttl / 3
        self.wake = asyncio.Event()

    async def run(self) -> None:
        """Dispatch until cancelled; database trouble is logged and retried."""
        try:
            while True:
                try:
                    if await self._leases.acquire(LEASE):
                        if not self._holding:
                            await self.recover()
                            self._holding = True
                        await self.run_once()
                        wait = min(self.poll_interval, self._renew_every)
                    else:
                        self._holding = False
                        wait = self._renew_every
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("schedules: %s; trying again in 1s", exc)
                    wait = 1.0
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self.wake.wait()
                self.wake.clear()
        finally:
            with contextlib.suppress(Exception):
                await self._leases.release(LEASE)

    async def recover(self) -> int:
        """Put back the schedules a dispatcher that lost the lease (it died) left ``running``;
        called when this one takes the lease. Returns how many."""
        async with self.schedules.database.connect() as conn:
            found = await conn.execute(
                update(schedules_table)
                .where(schedules_table.c.state == RUNNING)
                .values(state=PENDING, updated_at=utcnow())
            )
            await conn.commit()
        if found.rowcount:
            log.warning(
                "schedules: %d left running by a stopped dispatcher run again", found.rowcount
            )
        return int(found.rowcount or 0)

    async def run_once(self) -> int:
        """Run the schedules due now (at most ``batch_size``); returns how many ran."""
        query = (
            select(schedules_table)
            .where(schedules_table.c.state == PENDING, schedules_table.c.due_at <= utcnow())
            .order_by(schedules_table.c.due_at, schedules_table.c.id)
            .limit(self.batch_size)
        )
        async with self.schedules.database.connect() as conn:
            due = [_row(r) for r in await conn.execute(query)]
        ran = 0
        for item in due:
            ran += await self._dispatch(item)
        return ran

    async def _move(self, item: Schedule, from_state: str, **values: Any) -> bool:
        """Update a schedule that is still in ``from_state``; False when it no longer is
        (cancelled, or taken by another dispatcher)."""
        async with self.schedules.database.connect() as conn:
            moved = await conn.execute(
                update(schedules_table)
                .where(schedules_table.c.id == str(item.id), schedules_table.c.state == from_state)
                .values(**values, updated_at=utcnow())
            )
            await conn.commit()
        return bool(moved.rowcount == 1)

    async def _dispatch(self, item: Schedule) -> int:
        # Claimed (running) before it runs: from then on it cannot be cancelled.
        if not await self._move(item, PENDING, state=RUNNING):
            return 0
        command_type = self.schedules.commands.get(item.command)
        if command_type is None:
            error = (
                f"no command named {item.command[:200]!r} is handled by this application "
                "(renamed or removed?)"
            )
            await self._move(item, RUNNING, state=FAILED, error=error, attempts=item.attempts + 1)
            return 0
        try:
            command = command_type.model_validate_json(item.payload)
            await self.engine.run(
                command, headers=_headers(item.headers), inbox=(INBOX_CONSUMER, str(item.id))
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            attempts = item.attempts + 1
            error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR]
            if not _retryable(exc) or attempts >= self.max_attempts:
                log.error("schedule %s (%s) failed: %s", item.id, item.command, error)
                await self._move(item, RUNNING, state=FAILED, error=error, attempts=attempts)
            else:
                delay = min(60.0, 2.0 ** (attempts - 1))
                log.warning(
                    "schedule %s (%s) failed (attempt %d), again in %.0fs: %s",
                    item.id,
                    item.command,
                    attempts,
                    delay,
                    error,
                )
                await self._move(
                    item,
                    RUNNING,
                    state=PENDING,
                    error=error,
                    attempts=attempts,
                    due_at=utcnow() + timedelta(seconds=delay),
                )
            return 0
        await self._move(item, RUNNING, state=DONE, error=None, attempts=item.attempts + 1)
        self.dispatched += 1
        return 1


def _retryable(exc: Exception) -> bool:
    """Whether a failure may go away by itself: anything but a framework error, or one that
    says the database was unreachable or a race was lost (domain and validation errors will
    not go away)."""
    if not isinstance(exc, DddframeError):
        return True
    return isinstance(exc, DatabaseUnavailable | ConcurrencyConflict)
