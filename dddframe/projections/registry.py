"""``app.projections``: the registered projections, their subscriptions, readers, status and
rebuilds.

>>> import asyncio
>>> from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
>>> from dddframe import Application, Module, Projection
>>> names = Table("doc_names", MetaData(), Column("name", String(40), primary_key=True))
>>> class Names(Projection):
...     tables = (names,)
...     async def on_named(self, event: dict, view) -> None:
...         await view.session.execute(view.table(names).insert().values(name=event["name"]))
>>> m = Module("doc")
>>> m.event("Doc:Named")
>>> m.projection(Names, listen={"Doc:Named": "on_named"})
>>> async def main() -> int:
...     async with Application([m], database_url="sqlite+aiosqlite://") as app:
...         await app.create_schema()
...         await app.publish("Doc:Named", {"name": "ada"})
...         await app.drain()
...         async with app.projections.read(Names) as view:
...             return await view.session.scalar(select(func.count()).select_from(
...                 view.table(names)))
>>> asyncio.run(main())
1
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import injector as _injector
from sqlalchemy.exc import DBAPIError

from dddframe.bus.listener import ListenerTarget, controller_factory
from dddframe.bus.retry import RetryPolicy
from dddframe.bus.subscription import Subscription
from dddframe.database import Database
from dddframe.domain.events import EventRegistry
from dddframe.errors import ConfigurationError, ProjectionNotFound, close_matches
from dddframe.projections.binding import ProjectionBinding, resolve_handlers
from dddframe.projections.generations import Generation
from dddframe.projections.live import make_live_deliver
from dddframe.projections.projection import Projection, ProjectionView
from dddframe.projections.rebuild import Progress, Rebuilder, RebuildResult
from dddframe.projections.status import ProjectionStatus, read_status
from dddframe.projections.store import RUNNING, ProjectionStore

__all__ = ["Projections", "RegisteredProjection"]


@dataclass(eq=False)
class RegisteredProjection:
    """One ``module.projection(...)``, resolved: its handlers by event name and how to build it."""

    binding: ProjectionBinding
    handlers: dict[str, ListenerTarget]
    instance: Callable[[], Projection]
    _generations: dict[int, Generation] = field(default_factory=dict)

    @property
    def cls(self) -> type[Projection]:
        return self.binding.projection

    @property
    def name(self) -> str:
        return self.cls.projection_name()

    @property
    def event_names(self) -> frozenset[str]:
        return frozenset(self.handlers)

    def generation(self, number: int) -> Generation:
        """The physical tables of generation ``number`` (built once, then cached)."""
        found = self._generations.get(number)
        if found is None:
            found = self._generations[number] = Generation.of(list(self.cls.tables), number)
        return found


class Projections:
    """The application's projections (``app.projections``)."""

    def __init__(
        self,
        bindings: Sequence[ProjectionBinding],
        *,
        database: Database,
        registry: EventRegistry,
        container: _injector.Injector,
    ) -> None:
        self.database = database
        self.registry = registry
        self._store = ProjectionStore(database.dialect)
        self._by_name: dict[str, RegisteredProjection] = {}
        owners: dict[str, str] = {}
        for b in bindings:
            name = b.projection.projection_name()
            if name in self._by_name:
                raise ConfigurationError(
                    f"Two projections are named {name!r} (modules "
                    f"{self._by_name[name].binding.module!r} and {b.module!r}); register a "
                    "projection once, or give one another name (Projection.name)."
                )
            for t in b.projection.tables:
                if t.name in owners:
                    raise ConfigurationError(
                        f"Table {t.name!r} is declared by projections {owners[t.name]!r} and "
                        f"{name!r}; each projection owns its tables."
                    )
                owners[t.name] = name
            self._by_name[name] = RegisteredProjection(
                b, resolve_handlers(b, registry), controller_factory(b.projection, container)
            )

    def __iter__(self) -> Any:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, projection: type[Projection] | str) -> RegisteredProjection:
        """A registered projection by class or name; ProjectionNotFound (with close matches)."""
        name = projection if isinstance(projection, str) else None
        if isinstance(projection, type) and issubclass(projection, Projection):
            name = projection.projection_name()
        if name is None:
            raise ProjectionNotFound(
                f"{projection!r} is not a projection: pass a Projection subclass or its name"
            )
        found = self._by_name.get(name)
        if found is None or (isinstance(projection, type) and found.cls is not projection):
            known = ", ".join(sorted(self._by_name)) or "none"
            raise ProjectionNotFound(
                f"No projection is named {name[:200]!r} in this application (registered: "
                f"{known}); register it with module.projection(...)."
                + close_matches(name, self._by_name)
            )
        return found

    def subscriptions(self, default_retry: RetryPolicy) -> list[Subscription]:
        """One subscription per projection (``<group>.<Name>``), delivered by any bus."""
        subs: list[Subscription] = []
        for p in self._by_name.values():
            b = p.binding
            subs.append(
                Subscription(
                    name=f"{b.group}.{p.name}",
                    group=b.group,
                    listener=p.name,
                    event_names=p.event_names,
                    deliver=make_live_deliver(p, database=self.database, registry=self.registry),
                    retry=b.retry or default_retry,
                    dead_letter=b.dead_letter or "block_aggregate",
                )
            )
        return subs

    async def prepare(self) -> None:
        """Record each projection and create its active generation's (and a running rebuild's)
        tables if missing. Runs when the bus starts (after ``create_schema``); processes that
        start together may race to create the same row or table, so a conflict is tried again."""
        for p in self._by_name.values():
            for attempt in range(3):
                try:
                    await self._prepare(p)
                    break
                except DBAPIError:
                    if attempt == 2:
                        raise
                    await asyncio.sleep(0.1 * (attempt + 1))

    async def _prepare(self, p: RegisteredProjection) -> None:
        async with self.database.engine.begin() as conn:
            tables = [t.name for t in p.cls.tables]
            await self._store.ensure(conn, p.name, tables, p.cls.keep_history)
            state = await self._store.state(conn, p.name)
        generations = [state.active_generation]
        if state.rebuild_state == RUNNING and state.rebuild_generation is not None:
            generations.append(state.rebuild_generation)
        for number in generations:
            async with self.database.engine.begin() as conn:
                await p.generation(number).create(conn)

    @asynccontextmanager
    async def read(self, projection: type[Projection] | str) -> AsyncIterator[ProjectionView]:
        """``async with app.projections.read(OrderSummary) as view:``: a transaction and the
        tables of the active generation, resolved once, so a reader sees the generation before
        a rebuild's switch or the one after it, never a mix of both."""
        p = self.get(projection)
        async with self.database.session() as session, session.begin():
            state = await self._store.state(session, p.name)
            yield ProjectionView(session, p.generation(state.active_generation))

    async def status(self) -> list[ProjectionStatus]:
        """Each projection's position, lag (events and seconds) and rebuild, by name."""
        return [await read_status(self.database, p) for p in self._sorted()]

    def _sorted(self) -> list[RegisteredProjection]:
        return [self._by_name[n] for n in sorted(self._by_name)]

    def rebuilder(self, projection: type[Projection] | str) -> Rebuilder:
        return Rebuilder(self.get(projection), database=self.database, registry=self.registry)

    async def rebuild(
        self,
        projection: type[Projection] | str,
        *,
        from_position: int | None = None,
        batch_size: int = 500,
        progress: Progress | None = None,
    ) -> RebuildResult:
        """Replay the retained history into a new generation while the live one keeps serving,
        then switch to it atomically (see :mod:`dddframe.projections.rebuild`)."""
        return await self.rebuilder(projection).rebuild(
            from_position=from_position, batch_size=batch_size, progress=progress
        )

    async def resume(
        self,
        projection: type[Projection] | str,
        *,
        batch_size: int = 500,
        progress: Progress | None = None,
    ) -> RebuildResult:
        """Continue an interrupted rebuild from where it stopped, then switch."""
        return await self.rebuilder(projection).resume(batch_size=batch_size, progress=progress)

    async def abandon(self, projection: type[Projection] | str) -> int:
        """Drop an interrupted rebuild's generation; the live tables are not touched. Returns
        the generation dropped."""
        return await self.rebuilder(projection).abandon()
