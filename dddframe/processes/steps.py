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
from typing import TYPE_CHECKING, Any

import injector as _injector
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import flag_modified

from dddframe.bus.listener import decode_event
from dddframe.bus.subscription import Subscription
from dddframe.domain.envelope import CAUSATION_ID, CORRELATION_ID, Envelope
from dddframe.domain.events import DomainEvent, EventRegistry
from dddframe.engine.handlers import CommandHandler
from dddframe.engine.schedules import PENDING, Schedule, ScheduleRunner, Schedules
from dddframe.engine.unit_of_work import UnitOfWork
from dddframe.errors import ConcurrencyConflict, PoisonEvent, UsageError, close_matches
from dddframe.observability.delivery import observe_delivery
from dddframe.processes.context import ProcessContext, StepScope, current_step
from dddframe.processes.holds import (
    hand_on,
    park_event,
    park_timer,
)
from dddframe.processes.release import Releases
from dddframe.processes.timers import ProcessRelease, ProcessTimeout

if TYPE_CHECKING:
    from dddframe.engine.engine import Engine
    from dddframe.processes.binding import ProcessBinding, StepMethod
    from dddframe.processes.manager import ProcessManager

__all__ = ["ProcessRuntime", "release_handler", "timeout_handler"]

log = logging.getLogger("dddframe.processes")

_KEY_MAX = 255
_START_RACES = 3  # two starting events for one new instance: the loser runs again


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
        self.releases = Releases(self)

    # -- events --------------------------------------------------------------------------

    async def deliver(self, envelope: Envelope, attempt: int, subscription: Subscription) -> None:
        with observe_delivery(envelope, subscription.name, attempt):
            step = self.steps.get(envelope.name)
            if step is None or not self.registry.is_known(envelope.name):
                raise PoisonEvent(
                    f"{self.name} has no step for {envelope.name[:200]!r}; nothing here can "
                    "decode it." + close_matches(envelope.name, list(self.steps))
                )
            event = decode_event(envelope, step.event_type, self.registry)
            key = self.correlation_key(envelope, event)
            try:
                if subscription.timeout is not None:
                    async with asyncio.timeout(subscription.timeout):
                        await self._deliver(envelope, step, event, key, attempt, subscription)
                else:
                    await self._deliver(envelope, step, event, key, attempt, subscription)
            except (ConcurrencyConflict, PoisonEvent):
                raise  # lost races are re-run; poison holds nothing
            except Exception as exc:
                await self._hold(key, envelope, exc)
                raise

    async def _deliver(
        self,
        envelope: Envelope,
        step: StepMethod,
        event: Any,
        key: str,
        attempt: int,
        subscription: Subscription,
    ) -> None:
        event_id = str(envelope.event_id)
        headers = {CORRELATION_ID: envelope.correlation_id or event_id, CAUSATION_ID: event_id}
        starts = envelope.name in self.binding.starts_with
        scopes: list[StepScope] = []

        async def work(uow: UnitOfWork) -> bool:
            instance = await self._open(uow, key, envelope.name, starts=starts)
            if instance is None:
                return True
            if instance.held_by is not None and instance.held_by != event_id:
                log.info(
                    "%s %r is held by %s; %s %s waits behind it",
                    self.name,
                    key,
                    instance.held_by,
                    envelope.name,
                    event_id,
                )
                park_event(uow, self.name, key, envelope)
                return True
            scope = StepScope(self, uow, instance, headers)
            scopes.append(scope)
            ctx = ProcessContext(self.name, key, envelope, attempt, headers, scope)
            await self.call_step(step, instance, event, ctx, scope)
            if instance.held_by == event_id:  # the event that held it took effect at last
                await hand_on(
                    uow, self.name, instance, release=lambda: self.schedule_release(scope)
                )
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

    def schedule_release(self, scope: StepScope) -> None:
        scope.send(
            ProcessRelease(process=self.name, key=str(scope.instance.id)), at=None, after=None
        )

    async def _hold(self, key: str, envelope: Envelope, error: BaseException) -> None:
        """Hold the instance ``key`` by ``envelope``'s event, whose step failed (written on
        its own: the step's transaction was rolled back). A starting event's instance is
        created held, so what follows it waits too."""
        event_id = str(envelope.event_id)
        starts = envelope.name in self.binding.starts_with

        async def work(uow: UnitOfWork) -> None:
            instance = await uow.session.get(self.cls, key)
            if instance is None:
                if not starts:
                    return
                instance = self.cls(id=key)
                uow.session.add(instance)
            elif instance.held_by is not None or instance.completed:
                return  # held already (by this event: a retry; or by an earlier one)
            instance.held_by = event_id
            uow.track(instance)
            flag_modified(instance, "completed")

        try:
            await self.engine.transact(work, name=f"{self.name}.hold")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "%s %r: could not hold the instance after %s failed (%s); its later events "
                "are not held back",
                self.name,
                key,
                event_id,
                exc,
            )
        else:
            log.info(
                "%s %r is held by %s (%s: %s); its later events and timers wait",
                self.name,
                key,
                event_id,
                type(error).__name__,
                str(error)[:200],
            )

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

    async def call_step(
        self,
        step: StepMethod,
        instance: ProcessManager,
        event: Any,
        ctx: ProcessContext,
        scope: StepScope,
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
        token = current_step.set(scope)
        try:
            result = getattr(instance, step.method)(**kwargs)
            if inspect.isawaitable(result):
                await result
        finally:
            current_step.reset(token)

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
        """Run a due timer's step (inside the timer's own claimed unit of work); a held
        instance's timer waits behind what holds it."""
        instance = await uow.session.get(self.cls, command.key)
        if not self.timer_stands(instance, command.key, command.timer, command.token):
            return
        assert instance is not None
        uow.track(instance)
        flag_modified(instance, "completed")
        if instance.held_by is not None:
            log.info(
                "%s %r is held by %s; its timer %r waits behind it",
                self.name,
                command.key,
                instance.held_by,
                command.timer,
            )
            park_timer(uow, self.name, command.key, command.timer, command.token)
            return
        scope = await self.fire_step(instance, command.timer, command.token, uow)
        if scope.due_now:
            uow.after_commit(self.wake)  # the dispatcher runs them on its next look

    def timer_stands(
        self, instance: ProcessManager | None, key: str, timer: str, token: str
    ) -> bool:
        if instance is None or instance.completed:
            log.info(
                "%s %r: timer %r ignored (no such instance, or completed)", self.name, key, timer
            )
            return False
        if (instance.timers or {}).get(timer) != token:
            log.info(
                "%s %r: timer %r was cancelled or set again; this one is ignored",
                self.name,
                key,
                timer,
            )
            return False
        return True

    async def fire_step(
        self, instance: ProcessManager, timer: str, token: str, uow: UnitOfWork
    ) -> StepScope:
        step = self.timer_steps.get(timer)
        if step is None:
            raise UsageError(
                f"{self.name} no longer declares the timer {timer[:80]!r} (timeouts= in "
                "module.process); the stored timer cannot fire."
            )
        timers = dict(instance.timers or {})
        del timers[timer]
        instance.timers = timers
        outer = uow.headers
        headers = {CORRELATION_ID: outer.get(CORRELATION_ID) or token, CAUSATION_ID: token}
        scope = StepScope(self, uow, instance, headers)
        ctx = ProcessContext(self.name, str(instance.id), None, 1, headers, scope)
        await self.call_step(step, instance, None, ctx, scope)
        return scope


def _field(envelope: Envelope, event: Any, name: str) -> Any:
    if isinstance(event, DomainEvent):
        return getattr(event, name, None)
    if isinstance(event, dict):
        return event.get(name)
    payload = envelope.payload()
    return payload.get(name) if isinstance(payload, dict) else None


def _runtime(runtimes: Mapping[str, ProcessRuntime], process: str, what: str) -> ProcessRuntime:
    runtime = runtimes.get(process)
    if runtime is None:
        raise UsageError(
            f"No process manager is named {process[:80]!r} in this application (renamed or "
            f"removed?); {what}."
        )
    return runtime


def timeout_handler(runtimes: Mapping[str, ProcessRuntime]) -> CommandHandler:
    """The handler of :class:`ProcessTimeout`: fires the timer on its process's runtime."""

    async def fire_timeout(command: ProcessTimeout, uow: UnitOfWork) -> None:
        await _runtime(runtimes, command.process, "its stored timer cannot fire").fire(command, uow)

    return CommandHandler.create(ProcessTimeout, fire_timeout, "dddframe")


def release_handler(runtimes: Mapping[str, ProcessRuntime]) -> CommandHandler:
    """The handler of :class:`ProcessRelease`: runs what waits behind a held instance."""

    async def release_waiting(command: ProcessRelease, uow: UnitOfWork) -> None:
        runtime = _runtime(runtimes, command.process, "what waits behind its instance cannot run")
        await runtime.releases.release(command, uow)

    return CommandHandler.create(ProcessRelease, release_waiting, "dddframe")
