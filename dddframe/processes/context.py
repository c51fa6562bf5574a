"""What a process manager's step writes besides its instance, and the context it is given.

A :class:`StepScope` collects one step's sent commands and timers as writes of its unit of
work; :class:`ProcessContext` is the step's view of it (``ctx.send``); :func:`active_step`
finds the scope of the instance whose step is running, for ``self.timeout(...)``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from dddframe.domain.envelope import Envelope
from dddframe.engine.command import Command
from dddframe.engine.schedules import CANCELLED, PENDING, due_time
from dddframe.engine.unit_of_work import UnitOfWork
from dddframe.errors import UsageError, close_matches
from dddframe.ids import uuid7
from dddframe.outbox.records import utcnow
from dddframe.outbox.tables import schedules_table
from dddframe.processes.timers import ProcessTimeout

if TYPE_CHECKING:
    from dddframe.processes.manager import ProcessManager
    from dddframe.processes.steps import ProcessRuntime

__all__ = ["ProcessContext", "StepScope", "active_step", "current_step"]


@dataclass(slots=True)
class ProcessContext:
    """What a step gets besides the event: ``send`` commands, the ids it carries on.

    ``envelope`` is None in a timer's step.
    """

    process: str
    key: str
    envelope: Envelope | None
    attempt: int
    headers: dict[str, str]
    _step: StepScope = field(repr=False)

    @property
    def event_id(self) -> str | None:
        return None if self.envelope is None else str(self.envelope.event_id)

    def send(
        self, command: Command, *, at: datetime | None = None, after: timedelta | None = None
    ) -> uuid.UUID:
        """Send ``command`` when this step commits (or at ``at`` / ``after`` that): it is
        stored with the step's state in one transaction and run after the commit, at least
        once and in effect once, with this event's correlation id. Returns its schedule id
        (``app.schedules.get(id)``)."""
        return self._step.send(command, at=at, after=after)


current_step: ContextVar[StepScope | None] = ContextVar("dddframe_process_step", default=None)


class StepScope:
    """One step's writes besides the instance: sent commands and timers."""

    def __init__(
        self,
        runtime: ProcessRuntime,
        uow: UnitOfWork,
        instance: ProcessManager,
        headers: dict[str, str],
    ) -> None:
        self.runtime = runtime
        self.uow = uow
        self.instance = instance
        self.headers = headers
        self.due_now: list[dict[str, Any]] = []

    def send(self, command: Command, *, at: datetime | None, after: timedelta | None) -> uuid.UUID:
        now = utcnow()
        due = now if at is None and after is None else due_time(at, after)
        row = self.runtime.schedules.row(command, due=due, headers=self.headers)
        self.uow.before_commit(_inserting(row))
        if due <= now:
            self.due_now.append(row)
        return uuid.UUID(row["id"])

    def set_timer(
        self,
        instance: ProcessManager,
        name: str,
        *,
        at: datetime | None,
        after: timedelta | None,
    ) -> None:
        runtime = self.runtime
        if name not in runtime.timer_steps:
            raise UsageError(
                f"{runtime.name} has no timer named {name!r}: declare it with "
                f"module.process(..., timeouts=[{name!r}]) and a method on_{name}_timeout."
                + close_matches(name, list(runtime.timer_steps))
            )
        due = due_time(at, after)
        token = uuid7()
        timers = dict(instance.timers or {})
        previous = timers.get(name)
        fire = ProcessTimeout(process=runtime.name, key=instance.id, timer=name, token=str(token))
        row = runtime.schedules.row(fire, due=due, headers=self.headers, schedule_id=token)
        timers[name] = str(token)
        instance.timers = timers
        if previous is not None:
            self.uow.before_commit(_cancelling(previous))
        self.uow.before_commit(_inserting(row))

    def cancel_timer(self, instance: ProcessManager, name: str) -> None:
        timers = dict(instance.timers or {})
        previous = timers.pop(name, None)
        if previous is None:
            return
        instance.timers = timers
        self.uow.before_commit(_cancelling(previous))


def _inserting(row: dict[str, Any]) -> Callable[[AsyncSession], Any]:
    async def write(session: AsyncSession) -> None:
        await session.execute(insert(schedules_table).values(**row))

    return write


def _cancelling(schedule_id: str) -> Callable[[AsyncSession], Any]:
    async def write(session: AsyncSession) -> None:
        await session.execute(
            update(schedules_table)
            .where(schedules_table.c.id == schedule_id, schedules_table.c.state == PENDING)
            .values(state=CANCELLED, updated_at=utcnow())
        )

    return write


def active_step(instance: ProcessManager, what: str) -> StepScope:
    """The step running on ``instance`` now, for its timers; UsageError outside one."""
    step = current_step.get()
    if step is None or step.instance is not instance:
        raise UsageError(
            f"{type(instance).__name__}.{what}() works inside a step of that instance (a "
            "method bound in module.process(...) or a timer's on_<name>_timeout)."
        )
    return step
