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
import signal
import uuid
from pathlib import Path
from typing import ClassVar

import pytest
from sqlalchemy import func, select

from dddframe import Application
from dddframe.database import Database
from dddframe.outbox.tables import positions_table
from dddframe.testing.contract.catalog import scenario
from dddframe.testing.contract.fault_app import EVENT_NAME, SUBSCRIPTION, Bump, RolledBack
from dddframe.testing.contract.fault_scenario import (
    WAIT,
    DroppableConnections,
    FaultHarness,
    FaultScenario,
    RestartableDatabase,
)
from dddframe.testing.contract.history import HistoryEffect, read_history

__all__ = [
    "ConnectionDrop",
    "CrashAfterDispatch",
    "DatabaseRestart",
    "DroppableConnections",
    "FaultHarness",
    "FaultScenario",
    "RelaySigkill",
    "RestartableDatabase",
    "WorkerSigkill",
]


class WorkerSigkill(FaultScenario):
    """A worker (consumer) SIGKILLed mid-batch, twice; the next one finishes."""

    @scenario(
        "Worker SIGKILLed mid-batch, twice: nothing lost",
        origin="SIGKILL, real processes",
    )
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

    @scenario(
        "Crash after dispatch, before marking: resent, absorbed by the inbox",
        origin="NServiceBus outbox",
    )
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

    @scenario(
        "Relay SIGKILLed mid-batch, twice: resent from its position",
        origin="SIGKILL, real processes",
    )
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

    @scenario(
        "Broker closes the connections mid-stream: both reconnect", origin="Watermill TestReconnect"
    )
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

    @scenario(
        "PostgreSQL restarted under load",
        origin="server restart, real processes",
    )
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
