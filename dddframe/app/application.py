"""The application: wires modules, the injector, the engine and the bus, and checks it all."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

import injector as _injector
from sqlalchemy import MetaData, inspect

from dddframe.app.module import Module
from dddframe.app.subscriptions import listener_subscriptions, process_subscriptions
from dddframe.bus import resolve_bus
from dddframe.bus.dead_letter_store import DeadLetterStore
from dddframe.bus.listener import (
    Middleware,
    TxChecker,
)
from dddframe.bus.protocol import BusRuntime, EventBus
from dddframe.bus.subscription import Subscription
from dddframe.context import current_headers
from dddframe.database import Database
from dddframe.domain.envelope import CORRELATION_ID, Envelope
from dddframe.domain.events import DomainEvent, EventRegistry, default_registry
from dddframe.domain.limits import check_headers
from dddframe.domain.model import Model
from dddframe.engine.command import Command
from dddframe.engine.engine import ConflictRetry, Engine
from dddframe.engine.handlers import CommandHandler, check_services
from dddframe.engine.locks import Locker
from dddframe.engine.schedules import ScheduleDispatcher, ScheduleRunner, Schedules
from dddframe.engine.unit_of_work import UnitOfWork, current_unit_of_work
from dddframe.errors import (
    ConfigurationError,
    NotFound,
    NotStarted,
    close_matches,
)
from dddframe.outbox.leases import process_owner
from dddframe.outbox.schema import create_schema, drop_schema
from dddframe.processes.holds import HeldInstance
from dddframe.processes.steps import ProcessRuntime, release_handler, timeout_handler
from dddframe.processes.timers import ProcessRelease, ProcessTimeout
from dddframe.projections import Projections

__all__ = ["Application"]

log = logging.getLogger("dddframe.app")


def _current_uow() -> UnitOfWork:
    uow = current_unit_of_work.get()
    if uow is None:
        raise ConfigurationError(
            "UnitOfWork is only available while a command runs: ask for it in a command "
            "handler (or a service used by one), not in a controller or at start-up."
        )
    return uow


class Application:
    """An application built from modules.

    >>> import asyncio
    >>> async def main() -> int:
    ...     async with Application(modules=[], database_url="sqlite+aiosqlite://") as app:
    ...         await app.create_schema()
    ...         await app.drain()
    ...         return len(app.subscriptions)
    >>> asyncio.run(main())
    0
    """

    def __init__(
        self,
        modules: Sequence[Module],
        database_url: str = "sqlite+aiosqlite:///dddframe.db",
        bus: str | EventBus = "inprocess",
        *,
        middleware: Sequence[Middleware] = (),
        registry: EventRegistry = default_registry,
        metadata: Sequence[MetaData] = (Model.metadata,),
        conflict_retry: ConflictRetry = ConflictRetry(),
        locker: Locker | None = None,
        consume: bool = True,
        groups: Sequence[str] | None = None,
        engine_options: Mapping[str, Any] | None = None,
        schedule_lease_ttl: float = 10.0,
    ) -> None:
        names = [m.name for m in modules]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"Two modules share a name: {sorted(names)}")
        for m in modules:
            if not isinstance(m, Module):
                raise ConfigurationError(f"modules must be dddframe.Module objects, not {m!r}")
        self.modules = list(modules)
        self.database_url = database_url
        self.bus: EventBus = resolve_bus(bus)
        self.registry = registry
        self.metadata = list(metadata)
        self.middleware = list(middleware)
        self.conflict_retry = conflict_retry
        self.locker = locker
        self.consume = consume
        self.groups = frozenset(groups) if groups is not None else None
        self.engine_options = dict(engine_options or {})
        if (
            isinstance(schedule_lease_ttl, bool)
            or not isinstance(schedule_lease_ttl, int | float)
            or schedule_lease_ttl <= 0
        ):
            raise ConfigurationError(
                "schedule_lease_ttl is how many seconds a worker holds the schedule "
                f"dispatcher's lease without renewing it (> 0), not {schedule_lease_ttl!r}."
            )
        self.schedule_lease_ttl = float(schedule_lease_ttl)
        self.subscriptions: list[Subscription] = []
        self.tx_checkers: dict[str, TxChecker] = {}
        self.injector: _injector.Injector | None = None
        self._database: Database | None = None
        self._engine: Engine | None = None
        self._dead_letters: DeadLetterStore | None = None
        self._bus_started = False
        self._runtime: BusRuntime | None = None
        self._schedules: Schedules | None = None
        self._schedule_runner: ScheduleRunner | None = None
        self.processes: dict[str, ProcessRuntime] = {}
        # The schedule dispatcher of a consuming process, and the task that runs it.
        self._dispatcher: ScheduleDispatcher | None = None
        self._dispatch_task: asyncio.Task[None] | None = None
        self._projections: Projections | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Wire and check everything; start the bus once the schema exists."""
        if self._engine is not None:
            return
        for m in self.modules:
            for name in m.events:
                self.registry.declare(name)
            for name, version, fn in m.upcasters:
                self.registry.add_upcaster(name, version, fn)
        database = Database(self.database_url, **self.engine_options)
        self._database = database
        self._dead_letters = DeadLetterStore(database)
        handlers = self._handlers()
        self.injector = _injector.Injector([self._configure], auto_bind=True)
        engine = Engine(
            database,
            handlers,
            self.injector,
            notify=self._notify,
            locker=self.locker,
            conflict_retry=self.conflict_retry,
        )
        self._engine = engine
        self._schedules = Schedules(database, list(handlers))
        self._schedule_runner = ScheduleRunner(self._schedules, engine)
        for h in handlers.values():
            check_services(list(h.params), self.injector, f"handler of {h.command.__name__}")
        self._projections = Projections(
            [b for m in self.modules for b in m.projections],
            database=database,
            registry=self.registry,
            container=self.injector,
        )
        assert self.injector is not None
        assert self._schedules is not None and self._schedule_runner is not None
        self.subscriptions = listener_subscriptions(
            self.modules,
            engine=engine,
            bus=self.bus,
            registry=self.registry,
            container=self.injector,
            middleware=self.middleware,
            tx_checkers=self.tx_checkers,
        )
        self.subscriptions += process_subscriptions(
            self.modules,
            engine=engine,
            bus=self.bus,
            registry=self.registry,
            container=self.injector,
            schedules=self._schedules,
            runner=self._schedule_runner,
            wake=self._wake_dispatcher,
            runtimes=self.processes,
            taken={s.name for s in self.subscriptions},
        )
        self.subscriptions += self._projections.subscriptions(self.bus.default_retry)
        try:
            if await self._schema_exists():
                await self._start_bus()
            else:
                log.info("dddframe tables do not exist yet; the bus starts after create_schema()")
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        task, self._dispatch_task, self._dispatcher = self._dispatch_task, None, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._bus_started:
            await self.bus.stop()
            self._bus_started = False
        if self._database is not None:
            await self._database.dispose()
        self._database = None
        self._engine = None

    def _configure(self, binder: _injector.Binder) -> None:
        binder.bind(Application, to=self)
        binder.bind(Engine, to=lambda: self.engine)
        binder.bind(Database, to=lambda: self.database)
        binder.bind(DeadLetterStore, to=lambda: self.dead_letters)
        binder.bind(UnitOfWork, to=_current_uow)
        for m in self.modules:
            m.install(binder)

    def _handlers(self) -> dict[type[Command], CommandHandler]:
        handlers: dict[type[Command], CommandHandler] = {}
        for m in self.modules:
            for h in m.handlers:
                if h.command in handlers:
                    raise ConfigurationError(
                        f"{h.command.__name__} is handled by modules {handlers[h.command].module!r}"
                        f" and {m.name!r}; a command has exactly one handler."
                    )
                handlers[h.command] = h
        if any(m.processes for m in self.modules):
            # Fires process managers' timers: the runtimes are filled in once the engine is.
            self.processes = {}
            handlers[ProcessTimeout] = timeout_handler(self.processes)
            handlers[ProcessRelease] = release_handler(self.processes)
        return handlers

    def _wake_dispatcher(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.wake.set()

    async def _schema_exists(self) -> bool:
        async with self.database.engine.connect() as conn:
            return bool(await conn.run_sync(lambda c: inspect(c).has_table("dddframe_leases")))

    async def _start_bus(self) -> None:
        if self._bus_started:
            return
        await self.projections.prepare()
        self._runtime = BusRuntime(
            database=self.database,
            engine=self.engine,
            registry=self.registry,
            subscriptions=self.subscriptions,
            dead_letters=self.dead_letters,
            consume=self.consume,
            groups=self.groups,
            tx_checkers=self.tx_checkers,
        )
        await self.bus.start(self._runtime)
        self._bus_started = True
        if self.consume and self._dispatcher is None:  # workers run the due schedules
            assert self._schedule_runner is not None
            dispatcher = ScheduleDispatcher(
                self._schedule_runner, owner=process_owner(), lease_ttl=self.schedule_lease_ttl
            )
            self._dispatcher = dispatcher
            self._dispatch_task = asyncio.create_task(dispatcher.run(), name="dddframe-schedules")

    def _notify(self, envelopes: Sequence[Envelope]) -> None:
        self.bus.notify(envelopes)

    # -- what users call -----------------------------------------------------------------

    def _require_started(self) -> None:
        if self._engine is None:
            raise NotStarted(
                "The application is not started: use `async with Application(...) as app:` "
                "or `await app.start()` first."
            )

    @property
    def engine(self) -> Engine:
        """The command engine: ``await app.engine.run(command)``."""
        self._require_started()
        assert self._engine is not None
        return self._engine

    @property
    def database(self) -> Database:
        self._require_started()
        assert self._database is not None
        return self._database

    @property
    def dead_letters(self) -> DeadLetterStore:
        """List, show, replay and purge dead letters.

        A transport that keeps dead letters elsewhere (a Kafka topic, an AMQP queue) exposes a
        ``dead_letters`` attribute with the same methods, and that one is returned.
        """
        self._require_started()
        own = getattr(self.bus, "dead_letters", None)
        if own is not None:
            return own  # type: ignore[no-any-return]
        assert self._dead_letters is not None
        return self._dead_letters

    async def create_schema(self) -> None:
        """Create the framework's and the models' tables (if missing), then start the bus."""
        await create_schema(self.database, *self.metadata)
        await self._start_bus()

    async def drop_schema(self) -> None:
        await drop_schema(self.database, *self.metadata)

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until every pending event is delivered (for tests and scripts)."""
        self._require_started()
        if not self._bus_started:
            raise NotStarted("The bus is not running: call `await app.create_schema()` first.")
        await self.bus.drain(timeout)

    @property
    def projections(self) -> Projections:
        """The projections: ``read(cls)``, ``status()``, ``rebuild(name)``, ``resume``,
        ``abandon`` (see :mod:`dddframe.projections`)."""
        self._require_started()
        assert self._projections is not None
        return self._projections

    @property
    def schedules(self) -> Schedules:
        """The scheduled commands: ``get``, ``list``, ``cancel`` (see :meth:`schedule`)."""
        self._require_started()
        assert self._schedules is not None
        return self._schedules

    async def schedule(
        self,
        command: Command,
        *,
        at: datetime | None = None,
        after: timedelta | None = None,
    ) -> uuid.UUID:
        """Run ``command`` at ``at`` (an aware datetime) or ``after`` (a timedelta) from now;
        returns the schedule's id. Inside a unit of work (a handler, a listener's ``ctx.run``)
        it is stored in that transaction, so a rolled-back command schedules nothing. A worker
        (``consume=True``) runs it when due, at least once and in effect once (see
        :mod:`dddframe.engine.schedules`); the correlation id of the current command travels
        with it."""
        correlation = (current_headers.get() or {}).get(CORRELATION_ID)
        headers = {CORRELATION_ID: correlation} if correlation else None
        schedule_id = await self.schedules.schedule(command, at=at, after=after, headers=headers)
        if self._dispatcher is not None and current_unit_of_work.get() is None:
            self._dispatcher.wake.set()  # due soon, perhaps: look now
        return schedule_id

    async def cancel_schedule(self, schedule_id: uuid.UUID | str) -> bool:
        """Cancel a scheduled command that has not run: True if it was pending, False if it
        ran, failed or was cancelled already; ScheduleNotFound for an unknown id."""
        return await self.schedules.cancel(schedule_id)

    async def retry_schedule(self, schedule_id: uuid.UUID | str) -> bool:
        """Run a failed scheduled command (or process timer) again, due now with its attempts
        reset: True if it had failed, False if it is pending, ran or was cancelled;
        ScheduleNotFound for an unknown id."""
        retried = await self.schedules.retry(schedule_id)
        if retried and self._dispatcher is not None:
            self._dispatcher.wake.set()
        return retried

    async def held_processes(
        self, process: str | None = None, *, limit: int = 100
    ) -> list[HeldInstance]:
        """The process-manager instances a failed step holds (of ``process``, or of every
        process), with what holds each and how many events and timers wait behind it."""
        found: list[HeldInstance] = []
        for runtime in [self._process(process)] if process else self.processes.values():
            found.extend(await runtime.releases.held(limit=limit))
        return found[:limit]

    async def release_process(self, process: str, key: str) -> str | None:
        """Give up on what holds the instance ``key`` of ``process`` (an event whose dead
        letter was purged, or a waiting entry that cannot run) and release what waits behind
        it, in order. Returns what was skipped; None when the instance is not held."""
        return await self._process(process).releases.skip_head(key)

    def _process(self, name: str) -> ProcessRuntime:
        self._require_started()
        runtime = self.processes.get(name)
        if runtime is None:
            raise NotFound(
                f"No process manager is named {name[:80]!r} in this application."
                + close_matches(name, list(self.processes))
            )
        return runtime

    async def publish(
        self,
        name: str | DomainEvent,
        payload: Mapping[str, Any] | None = None,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Envelope:
        """Publish a direct message through the outbox (joins a running unit of work).

        ``name`` with a dict ``payload``, or a typed DomainEvent; ``key`` keeps messages with
        the same key in order; ``headers`` map str to str. The same signature as
        ``engine.publish``, ``ctx.publish`` and every bus's ``publish``.
        """
        checked = check_headers(headers, "app.publish(headers=...)")
        return await self.engine.publish(name, payload, key=key, headers=checked)
