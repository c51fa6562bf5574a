"""Running a process manager's steps: one event (or one fired timer) -> one transaction.

A step loads the instance by its correlation key (creating it on a starting event), calls the
bound method, and commits in ONE unit of work: the instance's new state and version, the inbox
entry of the event, the commands the step sent (``ctx.send``, stored as schedules due now) and
the timers it set or cancelled. After the commit the commands due now are run at once; a
process that dies before that leaves them to the schedule dispatcher, and either way each
takes effect once (its schedule is claimed in the command's transaction). Every step raises the
instance's version, so concurrent events for one instance are serialised (the loser re-runs).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import injector as _injector
from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import flag_modified

from dddframe.bus.listener import decode_event
from dddframe.bus.subscription import Subscription
from dddframe.domain.envelope import CAUSATION_ID, CORRELATION_ID, Envelope
from dddframe.domain.events import DomainEvent, EventRegistry
from dddframe.engine.command import Command
from dddframe.engine.handlers import CommandHandler
from dddframe.engine.schedules import (
    CANCELLED,
    PENDING,
    Schedule,
    ScheduleRunner,
    Schedules,
    due_time,
)
from dddframe.engine.unit_of_work import UnitOfWork
from dddframe.errors import PoisonEvent, UsageError, close_matches
from dddframe.ids import uuid7
from dddframe.observability.delivery import observe_delivery
from dddframe.outbox.records import utcnow
from dddframe.outbox.tables import schedules_table
from dddframe.processes.timers import ProcessTimeout

if TYPE_CHECKING:
    from dddframe.engine.engine import Engine
    from dddframe.processes.binding import ProcessBinding, StepMethod
    from dddframe.processes.manager import ProcessManager

__all__ = ["ProcessContext", "ProcessRuntime", "active_step", "timeout_handler"]

log = logging.getLogger("dddframe.processes")

_KEY_MAX = 255
_START_RACES = 3  # two starting events for one new instance: the loser runs again


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
    _step: _Step = field(repr=False)

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


_current: ContextVar[_Step | None] = ContextVar("dddframe_process_step", default=None)


class _Step:
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


def active_step(instance: ProcessManager, what: str) -> _Step:
    """The step running on ``instance`` now, for its timers; UsageError outside one."""
    step = _current.get()
    if step is None or step.instance is not instance:
        raise UsageError(
            f"{type(instance).__name__}.{what}() works inside a step of that instance (a "
            "method bound in module.process(...) or a timer's on_<name>_timeout)."
        )
    return step


class ProcessRuntime:
    """One registered process manager: delivers its events (the subscription's ``deliver``)
    and fires its timers (through :func:`timeout_handler`)."""

    def __init__(
        self,
        binding: ProcessBinding,
        steps: Mapping[str, StepMethod],
        timer_steps: Mapping[str, StepMethod],
        *,
        engine: Engine,
        registry: EventRegistry,
        schedules: Schedules,
        runner: ScheduleRunner,
        wake: Callable[[], None] = lambda: None,
        container: _injector.Injector | None = None,
    ) -> None:
        self.binding = binding
        self.container = container
        self.cls = binding.process
        self.name = binding.name
        self.steps = dict(steps)
        self.timer_steps = dict(timer_steps)
        self.engine = engine
        self.registry = registry
        self.schedules = schedules
        self.runner = runner
        self.wake = wake

    # -- events --------------------------------------------------------------------------

    async def deliver(self, envelope: Envelope, attempt: int, subscription: Subscription) -> None:
        with observe_delivery(envelope, subscription.name, attempt):
            if subscription.timeout is not None:
                async with asyncio.timeout(subscription.timeout):
                    await self._deliver(envelope, attempt, subscription)
            else:
                await self._deliver(envelope, attempt, subscription)

    async def _deliver(self, envelope: Envelope, attempt: int, subscription: Subscription) -> None:
        step = self.steps.get(envelope.name)
        if step is None or not self.registry.is_known(envelope.name):
            raise PoisonEvent(
                f"{self.name} has no step for {envelope.name[:200]!r}; nothing here can "
                "decode it." + close_matches(envelope.name, list(self.steps))
            )
        event = decode_event(envelope, step.event_type, self.registry)
        key = self.correlation_key(envelope, event)
        event_id = str(envelope.event_id)
        headers = {CORRELATION_ID: envelope.correlation_id or event_id, CAUSATION_ID: event_id}
        starts = envelope.name in self.binding.starts_with
        scopes: list[_Step] = []

        async def work(uow: UnitOfWork) -> bool:
            instance = await self._open(uow, key, envelope.name, starts=starts)
            if instance is None:
                return True
            scope = _Step(self, uow, instance, headers)
            scopes.append(scope)
            ctx = ProcessContext(self.name, key, envelope, attempt, headers, scope)
            await self._call(step, instance, event, ctx, scope)
            return True

        for race in range(1, _START_RACES + 1):
            scopes.clear()
            try:
                applied = await self.engine.transact(
                    work,
                    name=f"{self.name}.{step.method}",
                    headers=headers,
                    inbox=(subscription.name, event_id),
                )
                break
            except IntegrityError:
                if race == _START_RACES:
                    raise
                log.debug("%s %r: created by a concurrent step; running again", self.name, key)
        if applied and scopes:
            await self.run_now(scopes[-1].due_now)

    def correlation_key(self, envelope: Envelope, event: Any) -> str:
        """The instance an event belongs to, from ``correlate_by``; PoisonEvent when the
        event does not carry a usable key."""
        how = self.binding.correlate_by
        field_name: str | None = None
        try:
            if callable(how) and not isinstance(how, str):
                value = how(event)
            else:
                field_name = how if isinstance(how, str) else how[envelope.name]
                value = _field(envelope, event, field_name)
        except PoisonEvent:
            raise
        except Exception as exc:
            raise PoisonEvent(
                f"{self.name}: correlate_by failed on {envelope.name!r}: {exc}"
            ) from exc
        key = "" if value is None else str(value)
        if not key or len(key) > _KEY_MAX:
            what = f"field {field_name!r}" if field_name else "correlate_by"
            raise PoisonEvent(
                f"{self.name}: {envelope.name!r} has no usable correlation key ({what} gave "
                f"{str(value)[:80]!r}; a non-empty str of at most {_KEY_MAX} characters)."
            )
        return key

    async def _open(
        self, uow: UnitOfWork, key: str, event_name: str, *, starts: bool
    ) -> ProcessManager | None:
        instance = await uow.session.get(self.cls, key)
        if instance is None:
            if not starts:
                log.info(
                    "%s %r does not exist; %s does not start one: ignored",
                    self.name,
                    key,
                    event_name,
                )
                return None
            instance = self.cls(id=key)
            uow.session.add(instance)
        elif instance.completed:
            log.info("%s %r is completed; %s ignored", self.name, key, event_name)
            return None
        uow.track(instance)
        # Every step raises the version, so two steps of one instance never both commit.
        flag_modified(instance, "completed")
        return instance

    async def _call(
        self,
        step: StepMethod,
        instance: ProcessManager,
        event: Any,
        ctx: ProcessContext,
        scope: _Step,
    ) -> None:
        kwargs: dict[str, Any] = {}
        if step.event_param:
            kwargs[step.event_param] = event
        if step.ctx_param:
            kwargs[step.ctx_param] = ctx
        for name, service in step.services:
            if self.container is None:
                raise UsageError(f"{self.name}.{step.method} needs services: run it in an app")
            kwargs[name] = self.container.get(service)
        token = _current.set(scope)
        try:
            result = getattr(instance, step.method)(**kwargs)
            if inspect.isawaitable(result):
                await result
        finally:
            _current.reset(token)

    async def run_now(self, rows: list[dict[str, Any]]) -> None:
        """Run the commands a committed step sent for now; a failure is left to the schedule
        dispatcher (the rows stay pending and due)."""
        for row in rows:
            item = Schedule(
                id=uuid.UUID(row["id"]),
                command=row["command"],
                payload=row["payload"],
                headers=row["headers"],
                due_at=row["due_at"],
                state=PENDING,
                attempts=0,
                error=None,
                created_at=row["created_at"],
                updated_at=row["updated_at"],
            )
            try:
                await self.runner.run(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the dispatcher runs it later
                log.warning("%s: %s left to the dispatcher: %s", self.name, item.command, exc)
                self.wake()

    # -- timers --------------------------------------------------------------------------

    async def fire(self, command: ProcessTimeout, uow: UnitOfWork) -> None:
        """Run a due timer's step (inside the timer's own claimed unit of work)."""
        instance = await uow.session.get(self.cls, command.key)
        if instance is None or instance.completed:
            log.info(
                "%s %r: timer %r ignored (no such instance, or completed)",
                self.name,
                command.key,
                command.timer,
            )
            return
        timers = dict(instance.timers or {})
        if timers.get(command.timer) != command.token:
            log.info(
                "%s %r: timer %r was cancelled or set again; this one is ignored",
                self.name,
                command.key,
                command.timer,
            )
            return
        step = self.timer_steps.get(command.timer)
        if step is None:
            raise UsageError(
                f"{self.name} no longer declares the timer {command.timer[:80]!r} (timeouts= "
                "in module.process); the stored timer cannot fire."
            )
        del timers[command.timer]
        instance.timers = timers
        uow.track(instance)
        flag_modified(instance, "completed")
        outer = uow.headers
        headers = {
            CORRELATION_ID: outer.get(CORRELATION_ID) or command.token,
            CAUSATION_ID: command.token,
        }
        scope = _Step(self, uow, instance, headers)
        ctx = ProcessContext(self.name, command.key, None, 1, headers, scope)
        await self._call(step, instance, None, ctx, scope)
        if scope.due_now:
            self.wake()  # the dispatcher runs them on its next look


def _field(envelope: Envelope, event: Any, name: str) -> Any:
    if isinstance(event, DomainEvent):
        return getattr(event, name, None)
    if isinstance(event, dict):
        return event.get(name)
    payload = envelope.payload()
    return payload.get(name) if isinstance(payload, dict) else None


def timeout_handler(runtimes: Mapping[str, ProcessRuntime]) -> CommandHandler:
    """The handler of :class:`ProcessTimeout`: fires the timer on its process's runtime."""

    async def fire_timeout(command: ProcessTimeout, uow: UnitOfWork) -> None:
        runtime = runtimes.get(command.process)
        if runtime is None:
            raise UsageError(
                f"No process manager is named {command.process[:80]!r} in this application "
                "(renamed or removed?); its stored timer cannot fire."
            )
        await runtime.fire(command, uow)

    return CommandHandler.create(ProcessTimeout, fire_timeout, "dddframe")
