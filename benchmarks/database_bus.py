"""Database bus on PostgreSQL: backlog throughput and commit-to-listener latency.

1. Backlog: 100,000 sequenced outbox events; one worker (this process), 8 lanes, a listener
   doing nothing; positions persisted per batch as in production. Prints ``delivered: N
   events/s``.
2. Latency: a writer *process* commits 500 events/s (one transaction each); the worker wakes
   by LISTEN/NOTIFY (its poll interval is 5 s, so only NOTIFY can be prompt). Latency = time
   the listener ran - occurred_at (stamped just before the writer's commit). Prints ``p50`` and
   ``p99``.
3. Baseline, same table, same run: a naive poll loop (``SELECT ... WHERE id > :last ORDER BY
   id LIMIT n``, payload decoded, one UPDATE of the offset per batch). Prints ``naive: N
   events/s`` and the ratio.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime

from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text, update

from dddframe import Application, Envelope, Module
from dddframe.bus.database import DatabaseBus
from dddframe.cli.process import freeze_startup_heap
from dddframe.outbox.records import envelope_to_row
from dddframe.outbox.sequencer import Sequencer
from dddframe.outbox.tables import outbox_table
from dddframe.testing import reset_database

URL = os.environ.get("DDDFRAME_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
BACKLOG = int(os.environ.get("BENCH_DB_BACKLOG", "100000"))
RATE = int(os.environ.get("BENCH_DB_RATE", "500"))
SECONDS = float(os.environ.get("BENCH_DB_SECONDS", "10"))
ENGINE_OPTIONS = {"pool_pre_ping": os.environ.get("BENCH_DB_PRE_PING", "1") == "1"}

received: list[float] = []
latencies: list[float] = []
target: int = 0
done = asyncio.Event()


class NoopController:
    async def on_event(self, event: Envelope) -> None:
        received.append(0.0)
        if len(received) >= target:
            done.set()

    async def on_timed(self, event: Envelope) -> None:
        latencies.append(time.time() - event.occurred_at.timestamp())
        if len(latencies) >= target:
            done.set()


def bench_module() -> Module:
    m = Module("bench")
    m.event("Bench:Backlog", "Bench:Timed")
    m.controller(NoopController)
    m.listen("Bench:Backlog", "NoopController.on_event")
    m.listen("Bench:Timed", "NoopController.on_timed")
    return m


async def fill_backlog(app: Application, n: int) -> None:
    rows = [
        envelope_to_row(
            Envelope.new(
                "Bench:Backlog",
                json.dumps({"i": i, "note": "x" * 120}),
                aggregate_type="Bench",
                aggregate_id=str(i % 1000),
                aggregate_version=i // 1000 + 1,
                headers={"correlation_id": "c"},
            )
        )
        for i in range(n)
    ]
    async with app.database.connect() as conn:
        for start in range(0, n, 10_000):
            await conn.execute(insert(outbox_table), rows[start : start + 10_000])
        await conn.commit()
        await Sequencer().sequence(conn)


async def naive_loop(app: Application, n: int) -> float:
    offsets = Table(
        "bench_naive_offsets",
        MetaData(),
        Column("name", String(32), primary_key=True),
        Column("last_id", Integer),
    )
    async with app.database.connect() as conn:
        await conn.run_sync(offsets.metadata.create_all)
        await conn.execute(text("DELETE FROM bench_naive_offsets"))
        await conn.execute(insert(offsets).values(name="naive", last_id=0))
        await conn.commit()
    start = time.perf_counter()
    last, seen = 0, 0
    async with app.database.connect() as conn:
        while seen < n:
            rows = (
                await conn.execute(
                    select(outbox_table.c.id, outbox_table.c.payload, outbox_table.c.headers)
                    .where(outbox_table.c.id > last)
                    .order_by(outbox_table.c.id)
                    .limit(1000)
                )
            ).all()
            for row in rows:
                json.loads(row.payload)
                json.loads(row.headers)
            last = rows[-1].id
            seen += len(rows)
            await conn.execute(
                update(offsets).where(offsets.c.name == "naive").values(last_id=last)
            )
            await conn.commit()
    elapsed = time.perf_counter() - start
    async with app.database.connect() as conn:
        await conn.run_sync(offsets.metadata.drop_all)
        await conn.commit()
    return n / elapsed


WRITER = """
import asyncio, sys, time
from dddframe import Application
from dddframe.bus.database import DatabaseBus
from benchmarks.database_bus import bench_module
async def main(url, rate, seconds):
    async with Application([bench_module()], url, bus=DatabaseBus(), consume=False) as app:
        interval, n = 1.0 / rate, int(rate * seconds)
        start = time.perf_counter()
        for i in range(n):
            await app.publish("Bench:Timed", {"i": i}, key=str(i % 50))
            delay = start + (i + 1) * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
"""


async def main() -> None:
    global target
    await reset_database(URL)
    bus = DatabaseBus(concurrency=8, limit_per_run=1000, run_interval=5.0)
    app = Application([bench_module()], URL, bus=bus, consume=False)
    async with app:
        await app.create_schema()
        await fill_backlog(app, BACKLOG)
        naive = await naive_loop(app, BACKLOG)
    received.clear()
    target = BACKLOG
    done.clear()
    worker = Application([bench_module()], URL, bus=bus, engine_options=ENGINE_OPTIONS)
    async with worker:
        start = time.perf_counter()
        await worker.create_schema()  # starts the bus: it takes the leases and delivers
        freeze_startup_heap()  # what `dddframe worker` does once started
        await done.wait()
        await worker.drain(timeout=600)  # positions persisted
        delivered = BACKLOG / (time.perf_counter() - start)

        latencies.clear()
        target = int(RATE * SECONDS)
        done.clear()
        await asyncio.sleep(1.0)  # LISTEN connection ready
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, URL, str(RATE), str(SECONDS), cwd=os.getcwd()
        )
        await proc.wait()
        await asyncio.wait_for(done.wait(), timeout=60)
    lat = sorted(latencies)
    p50 = statistics.median(lat) * 1000
    p99 = lat[int(len(lat) * 0.99) - 1] * 1000
    print(
        f"backlog: {BACKLOG} events, 8 lanes, limit_per_run 1000, PostgreSQL, "
        f"{datetime.now(UTC):%Y-%m-%d}"
    )
    print(f"delivered: {delivered:,.0f} events/s")
    print(f"naive: {naive:,.0f} events/s")
    print(f"ratio: {delivered / naive:.2f}")
    print(f"latency at {RATE} events/s for {SECONDS:.0f}s ({len(lat)} events, NOTIFY wake-up):")
    print(f"p50: {p50:.1f} ms")
    print(f"p99: {p99:.1f} ms")
