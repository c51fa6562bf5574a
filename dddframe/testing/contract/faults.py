"""Fault scenarios with real processes: shipped test classes a transport subclasses.

Each scenario commits events (some commands roll back on purpose), runs workers and relays as
real child processes (``dddframe worker`` / ``dddframe relay`` on
:mod:`dddframe.testing.contract.fault_app`), injects a fault — SIGKILL of the relay or of the
worker mid-batch, a crash right after dispatch before the position is saved, broker
connections closed by the server, the database restarted under load — and ends with the
history check of :mod:`dddframe.testing.contract.history`: every committed event has exactly
one effect, nothing rolled back was delivered, order per aggregate by first delivery held,
and redeliveries were absorbed by the inbox. The counts go to the results file.

A transport proves itself by subclassing the scenarios that apply and providing the
``fault_harness`` fixture::

    class TestMyBusFaults(WorkerSigkill, CrashAfterDispatch):
        @pytest.fixture
        def fault_harness(self, tmp_path):
            return MyFaultHarness(database_url=f"sqlite+aiosqlite:///{tmp_path}/t.db")

The child processes import the harness's ``bus_factory`` (``package.module:factory``); they
run in the test process's working directory with its environment plus ``child_env()``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import pytest
from sqlalchemy import func, select

from dddframe import Application
from dddframe.database import Database
from dddframe.outbox.tables import positions_table
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
    results_path,
    write_result,
)
from dddframe.testing.plugin import reset_database

__all__ = [
    "ConnectionDrop",
    "CrashAfterDispatch",
    "DatabaseRestart",
    "DroppableConnections",
    "FaultHarness",
    "RelaySigkill",
    "RestartableDatabase",
    "WorkerSigkill",
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


class FaultScenario:
    """Shared by the scenarios; subclasses override the ``fault_harness`` fixture."""

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


class WorkerSigkill(FaultScenario):
    """A worker (consumer) SIGKILLed mid-batch, twice; the next one finishes."""

    async def test_worker_sigkilled_mid_batch_loses_nothing(
        self, fault_harness: FaultHarness, fault_results: Path
    ) -> None:
        total = self.aggregates * self.per_aggregate
        async with self.setup(fault_harness, relay=True) as (app, children):
            counters = [uuid.uuid4() for _ in range(self.aggregates)]
            rolled_back = await self.commit_load(app, counters, self.per_aggregate)
            crash_points = 0
            for share in (0.2, 0.5):
                worker = await children.start(
                    "worker", DDDFRAME_FAULT_RELAY="0", DDDFRAME_FAULT_DELAY="0.01"
                )
                await self.wait_effects(app, children, int(total * share))
                await children.kill(worker)  # mid-batch: its listener sleeps per event
                crash_points += 1
            await children.start("worker", DDDFRAME_FAULT_RELAY="0")
            await self.finish(
                app, children, fault_harness, fault_results,
                scenario="worker_sigkill", expected=total,
                crash_points=crash_points, rolled_back=rolled_back,
            )  # fmt: skip


class CrashAfterDispatch(FaultScenario):
    """The worker dies right after an effect committed, before its position/offset/ack is
    saved: the event is resent and the inbox absorbs it."""

    crash_after: ClassVar[tuple[int, ...]] = (1, 7, 15)

    async def test_crash_after_dispatch_is_resent_and_absorbed(
        self, fault_harness: FaultHarness, fault_results: Path
    ) -> None:
        async with self.setup(fault_harness, relay=True) as (app, children):
            counters = [uuid.uuid4() for _ in range(self.aggregates)]
            rolled_back = await self.commit_load(app, counters, self.per_aggregate)
            killed_events: list[str] = []
            for n in self.crash_after:
                worker = await children.start(
                    "worker", DDDFRAME_FAULT_RELAY="0", DDDFRAME_FAULT_KILL_AFTER=str(n)
                )
                try:
                    await asyncio.wait_for(worker.wait(), timeout=WAIT)
                except TimeoutError:
                    raise AssertionError(f"no crash\n{children.output()}") from None
                assert worker.returncode == -signal.SIGKILL, children.output()
                async with app.database.connect() as conn:
                    last = await conn.scalar(
                        select(HistoryEffect.event_id)
                        .where(HistoryEffect.pid == worker.pid)
                        .order_by(HistoryEffect.id.desc())
                        .limit(1)
                    )
                assert last is not None, "the crashed worker applied nothing"
                killed_events.append(last)
            await children.start("worker", DDDFRAME_FAULT_RELAY="0")
            await self.finish(
                app, children, fault_harness, fault_results,
                scenario="crash_after_dispatch",
                expected=self.aggregates * self.per_aggregate,
                crash_points=len(self.crash_after), rolled_back=rolled_back,
            )  # fmt: skip
            _committed, deliveries, _effects = await read_history(
                app.database, SUBSCRIPTION, EVENT_NAME
            )
        calls = [d.event_id for d in deliveries]
        for event_id in killed_events:  # resent after the crash, and absorbed (report.ok)
            assert calls.count(event_id) >= 2, f"{event_id} was not delivered again"


class RelaySigkill(FaultScenario):
    """The relay SIGKILLed mid-batch, twice (publishes sent, position not saved); the next
    relay resends from the saved position."""

    async def relay_position(self, database: Database) -> int:
        async with database.connect() as conn:
            found = await conn.scalar(
                select(func.max(positions_table.c.position)).where(
                    positions_table.c.subscription.like("relay.%")
                )
            )
        return int(found or 0)

    async def test_relay_sigkilled_mid_batch_loses_nothing(
        self, fault_harness: FaultHarness, fault_results: Path
    ) -> None:
        per_aggregate = 30
        total = self.aggregates * per_aggregate
        async with self.setup(fault_harness, relay=False) as (app, children):
            counters = [uuid.uuid4() for _ in range(self.aggregates)]
            rolled_back = await self.commit_load(app, counters, per_aggregate)
            await children.start("worker", DDDFRAME_FAULT_RELAY="0")
            crash_points = 0
            for share in (0.2, 0.5):
                relay = await children.start("relay", DDDFRAME_FAULT_RELAY_BATCH="3")
                goal = int(total * share)

                async def relayed(goal: int = goal) -> bool:
                    return await self.relay_position(app.database) >= goal

                await self.until(relayed, f"the relay did not reach {goal}", children)
                await children.kill(relay)
                crash_points += 1
            assert await self.relay_position(app.database) < total, "killed after the end"
            await children.start("relay")
            await self.finish(
                app, children, fault_harness, fault_results,
                scenario="relay_sigkill", expected=total,
                crash_points=crash_points, rolled_back=rolled_back,
            )  # fmt: skip


class ConnectionDrop(FaultScenario):
    """The broker closes the connections of the relay and the worker mid-stream (or restarts);
    both reconnect and nothing is lost."""

    async def test_connections_closed_by_the_broker_lose_nothing(
        self, fault_harness: FaultHarness, fault_results: Path
    ) -> None:
        if not isinstance(fault_harness, DroppableConnections):
            pytest.skip(f"{fault_harness.name} cannot drop its broker connections")
        first = self.aggregates * self.per_aggregate
        async with self.setup(fault_harness, relay=True) as (app, children):
            counters = [uuid.uuid4() for _ in range(self.aggregates)]
            rolled_back = await self.commit_load(app, counters, self.per_aggregate)
            await children.start("worker", DDDFRAME_FAULT_RELAY="0", DDDFRAME_FAULT_DELAY="0.01")
            # A broker that forgets its data on restart may only be restarted once caught up.
            await self.wait_effects(
                app, children, first if not fault_harness.broker_keeps_data else first // 4
            )
            await fault_harness.drop_connections()
            rolled_back += await self.commit_load(app, counters, self.per_aggregate)
            await self.finish(
                app, children, fault_harness, fault_results,
                scenario="connection_drop", expected=2 * first,
                crash_points=1, rolled_back=rolled_back,
            )  # fmt: skip


class DatabaseRestart(FaultScenario):
    """The database server restarts while a writer commits and a worker delivers."""

    async def test_database_restarted_under_load_loses_nothing(
        self, fault_harness: FaultHarness, fault_results: Path
    ) -> None:
        if not isinstance(fault_harness, RestartableDatabase):
            pytest.skip(f"{fault_harness.name} cannot restart its database")
        async with self.setup(fault_harness, relay=True) as (app, children):
            counters = [uuid.uuid4() for _ in range(self.aggregates)]
            rolled_back = await self.commit_load(app, counters, self.per_aggregate)
            await children.start("worker", DDDFRAME_FAULT_RELAY="0", DDDFRAME_FAULT_DELAY="0.01")
            await self.wait_effects(app, children, self.aggregates * self.per_aggregate // 4)
            restarted = asyncio.Event()
            writing = asyncio.create_task(self.commit_through_restart(app, counters, restarted))
            await asyncio.sleep(0.1)  # the writer is committing, the worker delivering
            try:
                await fault_harness.restart_database()
            finally:
                restarted.set()
            more_rolled_back, failures = await writing
            await self.finish(
                app, children, fault_harness, fault_results,
                scenario="database_restart", expected=2 * self.aggregates * self.per_aggregate,
                crash_points=1, rolled_back=rolled_back + more_rolled_back, exact=False,
                extra={"writer_failures": failures},
            )  # fmt: skip

    async def commit_through_restart(
        self, app: Application, counters: list[uuid.UUID], restarted: asyncio.Event
    ) -> tuple[int, int]:
        """The second load, going on until the restart is over; a command failing while the
        server restarts is tried again. Returns (rolled back, failed attempts)."""
        rolled_back = failures = chunks = 0
        async with asyncio.timeout(WAIT):
            while chunks < self.per_aggregate // 5 or not restarted.is_set():
                chunks += 1
                for cid in counters:
                    while True:
                        try:
                            await app.engine.run(Bump(counter_id=cid, times=5))
                            break
                        except Exception:
                            failures += 1
                            await asyncio.sleep(0.1)
                await asyncio.sleep(0.02)
        for cid in counters:
            try:
                await app.engine.run(Bump(counter_id=cid, times=2, fail=True))
            except RolledBack:
                rolled_back += 1
        return rolled_back, failures
