"""Scheduled commands: a command stored now and run by a worker at its due time.

``await app.schedule(command, after=timedelta(minutes=15))`` (or ``at=<aware datetime>``) stores
the command in ``dddframe_schedules`` and returns its id. Inside a unit of work (a handler, or a
listener's ``ctx.run``) the row is written in that transaction, so a command that rolls back
schedules nothing. ``await app.cancel_schedule(id)`` cancels one that has not run.

Workers dispatch due schedules (:class:`ScheduleDispatcher`): one dispatcher per database at a
time holds the ``dddframe.schedules`` lease, and another worker takes over when its owner dies.
A schedule is claimed in the command's own transaction: the first statement of that
transaction moves its row from ``pending`` to ``done``, so the command's effects and the claim
commit or roll back together. A schedule dispatched twice (two dispatchers around a lease
takeover, or a process manager's step that runs its commands at once while the dispatcher finds
them due) takes effect once: the second claim waits on the row lock and then finds it done. A
cancellation is the same race on the same row: it either comes first (``cancel_schedule``
answers True and the command never runs) or finds the row done (False). A command that fails
is tried again after a back-off (1, 2, 4 ... 60 s) and marked ``failed`` with the error after
``max_attempts`` (a process manager's timer follows its subscription's retry policy instead);
a schedule whose command type no longer exists fails at once, saying so.
``await app.retry_schedule(id)`` (``dddframe schedules retry ID``) puts a failed one back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import CursorResult, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

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
    "ScheduleClaim",
    "ScheduleDispatcher",
    "ScheduleRunner",
    "Schedules",
    "command_name",
]

log = logging.getLogger("dddframe.schedules")

PENDING, RUNNING, DONE = "pending", "running", "done"
CANCELLED, FAILED = "cancelled", "failed"
SCHEDULE_STATES = (PENDING, RUNNING, DONE, CANCELLED, FAILED)
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
        values = self.row(command, due=due_time(at, after), headers=headers)
        uow = current_unit_of_work.get()
        if uow is not None:  # joins the running command's transaction
            await uow.session.execute(insert(schedules_table).values(**values))
        else:
            async with self.database.connect() as conn:
                await conn.execute(insert(schedules_table).values(**values))
                await conn.commit()
        return uuid.UUID(values["id"])

    def row(
        self,
        command: Command,
        *,
        due: datetime,
        headers: dict[str, str] | None = None,
        schedule_id: uuid.UUID | None = None,
    ) -> dict[str, Any]:
        """The ``dddframe_schedules`` row of ``command`` due at ``due`` (checked: a command
        this application handles), for callers that insert it in a transaction of their own."""
        if not isinstance(command, Command):
            raise UsageError(f"schedule() takes a Command instance, not {type(command).__name__}.")
        name = command_name(type(command))
        if name not in self.commands:
            raise UsageError(
                f"No module handles {type(command).__name__}: a scheduled command needs a "
                f"handler (@module.handles({type(command).__name__}))."
            )
        now = utcnow()
        return {
            "id": str(schedule_id or uuid7()),
            "command": name,
            "payload": command.model_dump_json(),
            "headers": json.dumps(headers or {}, separators=(",", ":")),
            "due_at": due,
            "state": PENDING,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }

    async def cancel(self, schedule_id: uuid.UUID | str) -> bool:
        """Cancel a pending schedule: True when it was pending, False when it had run, failed
        or was cancelled already; :class:`~dddframe.errors.ScheduleNotFound` when unknown."""
        return await self._move(schedule_id, PENDING, state=CANCELLED)

    async def retry(self, schedule_id: uuid.UUID | str) -> bool:
        """Put a failed schedule back, due now with its attempts reset: True when it had
        failed, False when it is pending, ran or was cancelled;
        :class:`~dddframe.errors.ScheduleNotFound` when unknown."""
        return await self._move(schedule_id, FAILED, state=PENDING, attempts=0, due_at=utcnow())

    async def _move(self, schedule_id: uuid.UUID | str, when: str, **values: Any) -> bool:
        """Set ``values`` on the schedule if it is in state ``when``: True when it was, False
        when it is in another; ScheduleNotFound when there is no such schedule."""
        key = _schedule_key(schedule_id)
        async with self.database.connect() as conn:
            done = await conn.execute(
                update(schedules_table)
                .where(schedules_table.c.id == key, schedules_table.c.state == when)
                .values(**values, updated_at=utcnow())
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


@dataclass(slots=True)
class ScheduleClaim:
    """The claim of one schedule, made in its command's transaction: its row moves from
    ``pending`` to ``done`` there, or the command is skipped (it ran, or was cancelled).
    ``taken`` tells afterwards which it was."""

    schedule_id: str
    attempts: int
    taken: bool = False

    async def claim(self, session: AsyncSession) -> bool:
        moved: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
            update(schedules_table)
            .where(schedules_table.c.id == self.schedule_id, schedules_table.c.state == PENDING)
            .values(state=DONE, error=None, attempts=self.attempts + 1, updated_at=utcnow())
        )
        self.taken = moved.rowcount == 1
        return self.taken


Backoff = Callable[[Command, int], float | None]
"""Seconds to wait after ``attempts`` failed runs of ``command`` (1 = the first), or None to
mark it failed."""


class ScheduleRunner:
    """Runs one schedule: its command through ``engine.run`` with the schedule's claim, and
    on failure a back-off (or ``failed`` after ``max_attempts``), unless a back-off was set
    for the command's type (:meth:`set_backoff`; a process manager's timers follow its
    subscription's retry policy)."""

    def __init__(self, schedules: Schedules, engine: Engine, *, max_attempts: int = 10) -> None:
        self.schedules = schedules
        self.engine = engine
        self.max_attempts = max_attempts
        self.dispatched = 0
        self._backoffs: dict[type[Command], Backoff] = {}

    def set_backoff(self, command_type: type[Command], backoff: Backoff) -> None:
        """Decide the retries of ``command_type``'s schedules with ``backoff``."""
        self._backoffs[command_type] = backoff

    def _delay(self, command: Command | None, attempts: int) -> float | None:
        if command is not None and (backoff := self._backoffs.get(type(command))) is not None:
            return backoff(command, attempts)
        return min(60.0, 2.0 ** (attempts - 1)) if attempts < self.max_attempts else None

    async def run(self, item: Schedule) -> bool:
        """Run ``item``'s command; True when it took effect now (False: it had run or was
        cancelled, or it failed and was put back or marked failed)."""
        command_type = self.schedules.commands.get(item.command)
        if command_type is None:
            error = (
                f"no command named {item.command[:200]!r} is handled by this application "
                "(renamed or removed?)"
            )
            await self._move(item, state=FAILED, error=error, attempts=item.attempts + 1)
            return False
        claim = ScheduleClaim(str(item.id), item.attempts)
        command: Command | None = None
        try:
            command = command_type.model_validate_json(item.payload)
            await self.engine.run(command, headers=_headers(item.headers), claim=claim)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(item, exc, command)
            return False
        if not claim.taken:
            return False  # it ran before, or was cancelled
        self.dispatched += 1
        return True

    async def _failed(self, item: Schedule, exc: Exception, command: Command | None) -> None:
        attempts = item.attempts + 1
        error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR]
        delay = self._delay(command, attempts) if _retryable(exc) else None
        if delay is None:
            log.error(
                "schedule %s (%s) failed after %d attempt(s): %s (`dddframe schedules retry "
                "%s` runs it again)",
                item.id,
                item.command,
                attempts,
                error,
                item.id,
            )
            await self._move(item, state=FAILED, error=error, attempts=attempts)
            return
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
            state=PENDING,
            error=error,
            attempts=attempts,
            due_at=utcnow() + timedelta(seconds=delay),
        )

    async def _move(self, item: Schedule, **values: Any) -> bool:
        """Update a schedule that is still pending; False when it no longer is (it ran, or
        was cancelled meanwhile)."""
        async with self.schedules.database.connect() as conn:
            moved = await conn.execute(
                update(schedules_table)
                .where(schedules_table.c.id == str(item.id), schedules_table.c.state == PENDING)
                .values(**values, updated_at=utcnow())
            )
            await conn.commit()
        return bool(moved.rowcount == 1)


class ScheduleDispatcher:
    """Runs due schedules through the engine, one dispatcher per database (a lease), up to
    ``concurrency`` at a time (one on SQLite, which has one writer)."""

    def __init__(
        self,
        runner: ScheduleRunner,
        *,
        owner: str,
        poll_interval: float = 0.5,
        lease_ttl: float = 10.0,
        batch_size: int = 200,
        concurrency: int | None = None,
    ) -> None:
        if lease_ttl <= 0 or poll_interval <= 0:
            raise InvalidArgument(
                f"lease_ttl and poll_interval must be positive seconds, not {lease_ttl!r} and "
                f"{poll_interval!r}."
            )
        self.runner = runner
        self.schedules = runner.schedules
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        database = self.schedules.database
        self.concurrency = concurrency or (1 if database.dialect == "sqlite" else 8)
        self._holding = False
        self._leases = Leases(database, owner, lease_ttl)
        self._renew_every = lease_ttl / 3
        self.wake = asyncio.Event()

    @property
    def dispatched(self) -> int:
        return self.runner.dispatched

    async def run(self) -> None:
        """Dispatch until cancelled; database trouble is logged and retried."""
        try:
            while True:
                try:
                    if await self._leases.acquire(LEASE):
                        if not self._holding:
                            await self.recover()
                            self._holding = True
                        ran = await self.run_once()
                        # A full batch: more are due, look again at once (after renewing);
                        # otherwise sleep until the next due schedule, at most a poll.
                        wait = 0.0 if ran >= self.batch_size else await self._until_next_due()
                        wait = min(wait, self._renew_every)
                    else:
                        self._holding = False
                        wait = self._renew_every
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("schedules: %s; trying again in 1s", exc)
                    wait = 1.0
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self.wake.wait()
                self.wake.clear()
        finally:
            with contextlib.suppress(Exception):
                await self._leases.release(LEASE)

    async def _until_next_due(self) -> float:
        """Seconds until the soonest pending schedule is due (indexed), capped at the poll
        interval, and at least 10 ms so a row that cannot be run does not spin the loop."""
        async with self.schedules.database.connect() as conn:
            soonest = await conn.scalar(
                select(func.min(schedules_table.c.due_at)).where(schedules_table.c.state == PENDING)
            )
        if soonest is None:
            return self.poll_interval
        seconds = (as_utc(soonest) - utcnow()).total_seconds()
        return max(0.01, min(self.poll_interval, seconds))

    async def recover(self) -> int:
        """Put back schedules left ``running`` (the state a dispatcher of schema version 2
        claimed rows in before running them); called when this one takes the lease."""
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
        """Run the schedules due now (at most ``batch_size``, ``concurrency`` at a time);
        returns how many were looked at."""
        query = (
            select(schedules_table)
            .where(schedules_table.c.state == PENDING, schedules_table.c.due_at <= utcnow())
            .order_by(schedules_table.c.due_at, schedules_table.c.id)
            .limit(self.batch_size)
        )
        async with self.schedules.database.connect() as conn:
            due = [_row(r) for r in await conn.execute(query)]
        if self.concurrency == 1:
            for item in due:
                await self.runner.run(item)
            return len(due)
        gate = asyncio.Semaphore(self.concurrency)

        async def one(item: Schedule) -> None:
            async with gate:
                await self.runner.run(item)

        await asyncio.gather(*(one(item) for item in due))
        return len(due)


def _retryable(exc: Exception) -> bool:
    """Whether a failure may go away by itself: anything but a framework error, or one that
    says the database was unreachable or a race was lost (domain and validation errors will
    not go away)."""
    if not isinstance(exc, DddframeError):
        return True
    return isinstance(exc, DatabaseUnavailable | ConcurrencyConflict)
