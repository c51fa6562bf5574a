"""The base of the fault scenarios: what a transport's harness provides, the writer and
child processes a scenario runs, and the history check that ends it.

The scenarios themselves are in :mod:`dddframe.testing.contract.faults`.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import pytest
from sqlalchemy import func, select

from dddframe import Application
from dddframe.database import Database
from dddframe.testing.contract.catalog import ContractSuite
from dddframe.testing.contract.fault_app import (
    EVENT_NAME,
    SUBSCRIPTION,
    Bump,
    RolledBack,
    fault_modules,
    load_bus,
)
from dddframe.testing.contract.fault_processes import Children
from dddframe.testing.contract.history import (
    HistoryEffect,
    HistoryReport,
    check_history,
    read_history,
)
from dddframe.testing.contract.results import results_path, write_result
from dddframe.testing.plugin import reset_database

__all__ = [
    "WAIT",
    "DroppableConnections",
    "FaultHarness",
    "FaultScenario",
    "RestartableDatabase",
]

WAIT = 120.0  # seconds any one wait may take before the scenario fails (never a timing claim)
STALL = 30.0  # seconds without any new delivery after which the final check stops waiting


@runtime_checkable
class FaultHarness(Protocol):
    """What a transport provides to run the fault scenarios."""

    name: str  # the transport's id in the results file, e.g. "database-sqlite"
    database_url: str
    bus_factory: str  # "package.module:factory"; factory(relay: bool) -> EventBus

    def child_env(self) -> Mapping[str, str]:
        """Environment the bus factory needs (also applied to the test process's writer)."""


@runtime_checkable
class DroppableConnections(Protocol):
    broker_keeps_data: bool  # False: a restart loses what the broker held (a memory broker)

    async def drop_connections(self) -> None:
        """Close this test's broker connections from the server side (or restart the broker)."""


@runtime_checkable
class RestartableDatabase(Protocol):
    async def restart_database(self) -> None:
        """Restart the database server this harness's ``database_url`` points to."""


class FaultScenario(ContractSuite):
    """Shared by the fault scenarios; subclasses override the ``fault_harness`` fixture."""

    aggregates: ClassVar[int] = 6
    per_aggregate: ClassVar[int] = 20

    @pytest.fixture
    def fault_harness(self) -> FaultHarness:
        """Subclasses provide their transport's harness; a subclass that forgot fails clearly."""
        pytest.fail(
            f"{type(self).__name__} runs fault scenarios but does not provide the "
            "fault_harness fixture: define `@pytest.fixture def fault_harness(self)` returning "
            "a FaultHarness for your transport",
            pytrace=False,
        )

    @pytest.fixture
    def fault_results(self, request: pytest.FixtureRequest) -> Path:
        cache = getattr(request.config, "cache", None)
        return results_path(cache.mkdir("dddframe-contract").parent.parent if cache else None)

    @asynccontextmanager
    async def setup(
        self, harness: FaultHarness, *, relay: bool
    ) -> AsyncIterator[tuple[Application, Children]]:
        """The writer (this process, consuming nothing) and the scenario's child processes."""
        saved = {k: os.environ.get(k) for k in harness.child_env()}
        os.environ.update(harness.child_env())
        await reset_database(harness.database_url)
        app = Application(
            fault_modules(),
            harness.database_url,
            bus=load_bus(harness.bus_factory, relay=relay),
            consume=False,
        )
        children = Children(harness)
        try:
            async with app:
                await app.create_schema()
                try:
                    yield app, children
                finally:
                    await children.stop_all()
                    children.close()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    async def commit_load(self, app: Application, counters: list[uuid.UUID], times: int) -> int:
        """``times`` events per counter, in chunks; one more chunk per counter rolls back."""
        rolled_back = 0
        for _ in range(0, times, 5):
            for cid in counters:
                await app.engine.run(Bump(counter_id=cid, times=5))
        for cid in counters:
            try:
                await app.engine.run(Bump(counter_id=cid, times=2, fail=True))
            except RolledBack:
                rolled_back += 1
        return rolled_back

    async def effects(self, database: Database) -> int:
        async with database.connect() as conn:
            found = await conn.scalar(select(func.count()).select_from(HistoryEffect))
        return int(found or 0)

    async def until(
        self, reached: Callable[[], Awaitable[bool]], what: str, children: Children
    ) -> None:
        """Poll ``reached`` until it is true; fail with the children's output after WAIT."""
        try:
            async with asyncio.timeout(WAIT):
                while True:
                    if await reached():
                        return
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(f"{what} after {WAIT}s\n{children.output()}") from None

    async def wait_effects(self, app: Application, children: Children, count: int) -> None:
        async def enough() -> bool:
            return await self.effects(app.database) >= count

        await self.until(enough, f"fewer than {count} effects", children)

    async def history(self, database: Database) -> HistoryReport:
        return check_history(*await read_history(database, SUBSCRIPTION, EVENT_NAME))

    async def finish(
        self,
        app: Application,
        children: Children,
        harness: FaultHarness,
        results: Path,
        *,
        scenario: str,
        expected: int,
        crash_points: int,
        rolled_back: int,
        exact: bool = True,
        extra: Mapping[str, int] | None = None,
    ) -> HistoryReport:
        """Wait until every committed event has its effect (bounded), record, and check."""
        report = await self.history(app.database)
        loop = asyncio.get_running_loop()
        deadline = progress_at = loop.time()
        deadline += WAIT
        while report.lost and loop.time() < deadline and loop.time() - progress_at < STALL:
            await asyncio.sleep(0.1)
            before, report = report, await self.history(app.database)
            if (report.deliveries, report.lost) != (before.deliveries, before.lost):
                progress_at = loop.time()
        await asyncio.sleep(0.3)  # a straggling redelivery still counts in the report
        report = await self.history(app.database)
        write_result(
            results,
            scenario=scenario,
            transport=harness.name,
            crash_points=crash_points,
            report=report,
            extra={"rolled_back": rolled_back, **(extra or {})},
        )
        if exact:
            assert report.committed == expected, report
        else:  # a command whose commit raced a restart may have committed and been run again
            assert report.committed >= expected, report
        assert report.ok, f"{report.problems()} {report}\n{children.output()}"
        return report
