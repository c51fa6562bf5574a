"""Process managers across a SIGKILL and a restart: a step's commands are still run once, and
timers pending across the downtime fire once each after the start, none for completed
instances."""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, insert, select

from dddframe import Application
from dddframe.bus.inprocess import InProcessBus
from dddframe.engine.schedules import Schedules
from dddframe.outbox.records import utcnow
from dddframe.outbox.tables import schedules_table
from dddframe.processes.timers import ProcessTimeout
from dddframe.testing import reset_database
from tests.processes.model import Effect, Fulfilment, fulfilment_module

ROOT = Path(__file__).resolve().parents[2]


async def _effects(app: Application, what: str) -> int:
    async with app.database.session() as s:
        return int(
            await s.scalar(select(func.count()).select_from(Effect).where(Effect.what == what)) or 0
        )


async def test_sigkill_between_a_steps_commit_and_its_commands_runs_them_once(
    any_db: str,
) -> None:
    await reset_database(any_db)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.processes.crash_child",
        any_db,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), timeout=60)
    assert child.returncode == -signal.SIGKILL, err.decode()
    assert "committed 1" in out.decode()

    reader = Application([fulfilment_module()], any_db, consume=False)
    async with reader:  # before a worker starts: the step committed, its command did not run
        assert await _effects(reader, "reserve") == 0
        pending = sorted(s.command.rsplit(".", 1)[1] for s in await reader.schedules.list())
        assert pending == ["ProcessTimeout", "Record"]  # the payment timer and the command
    app = Application([fulfilment_module()], any_db, bus=InProcessBus(poll_interval=0.05))
    async with app:
        await app.create_schema()
        async with asyncio.timeout(20):
            while await _effects(app, "reserve") == 0:
                await asyncio.sleep(0.05)
        await app.drain()
        await asyncio.sleep(0.3)  # a second run, if there were one, would land by now
        assert await _effects(app, "reserve") == 1
        async with app.database.session() as s:
            pm = await s.get(Fulfilment, "crash-1")
        assert pm is not None and pm.state == "awaiting_payment"


async def test_timers_pending_across_downtime_fire_once_after_the_start(any_db: str) -> None:
    """Timers due while no worker ran (10,000 on PostgreSQL, 1,000 on MariaDB and SQLite to
    keep the suite short, across as many instances, a tenth of them completed): each fires
    once after a worker starts, none for a completed instance."""
    await reset_database(any_db)
    n = 10_000 if any_db.startswith("postgresql") else 1000
    writer = Application([fulfilment_module()], any_db, consume=False)
    async with writer:
        await writer.create_schema()
        schedules: Schedules = writer.schedules
        due = utcnow() - timedelta(seconds=5)  # became due during the downtime
        instances, rows = [], []
        for i in range(n):
            key = f"t-{i}"
            token = f"00000000-0000-7000-8000-{i:012d}"
            completed = i % 10 == 0
            instances.append(
                {
                    "id": key,
                    "version": 1,
                    "state": "shipped" if completed else "awaiting_payment",
                    "ticks": 0,
                    "completed": completed,
                    "timers": {} if completed else {"payment": token},
                }
            )
            fire = ProcessTimeout(process="Fulfilment", key=key, timer="payment", token=token)
            row = schedules.row(fire, due=due, headers={})
            row["id"] = token
            rows.append(row)
        async with writer.database.connect() as conn:
            for start in range(0, n, 1000):
                await conn.execute(insert(Fulfilment.__table__), instances[start : start + 1000])
                await conn.execute(insert(schedules_table), rows[start : start + 1000])
            await conn.commit()

    worker = Application([fulfilment_module()], any_db, bus=InProcessBus(poll_interval=0.05))
    async with worker:
        async with asyncio.timeout(300):
            while (
                len(await worker.schedules.list(states=["pending"], limit=1)) > 0
                or await _effects(worker, "cancel") < n - n // 10
            ):
                await asyncio.sleep(0.2)
        assert await _effects(worker, "cancel") == n - n // 10
        async with worker.database.session() as s:
            cancelled = await s.scalar(
                select(func.count()).select_from(Fulfilment).where(Fulfilment.state == "cancelled")
            )
            keys = await s.scalars(
                select(Effect.order_id).where(Effect.what == "cancel").order_by(Effect.order_id)
            )
            fired = list(keys)
        assert cancelled == n - n // 10
        assert len(set(fired)) == len(fired)  # each once
        assert not any(int(k.split("-")[1]) % 10 == 0 for k in fired)  # none completed
