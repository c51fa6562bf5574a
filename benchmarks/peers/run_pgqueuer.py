"""pgqueuer: a PostgreSQL job queue (asyncpg driver; jobs wake workers by its trigger's NOTIFY).

W1: the aggregate row written with asyncpg and ``Queries.enqueue`` on the same connection in
one transaction (pgqueuer has no ORM; the change is an UPDATE with a version check).
W2: the backlog enqueued in batches of 1000; one ``QueueManager`` with ``batch_size=1000`` in
``mode=drain`` (it returns once the queue is empty; a finished job is deleted and logged).
W3: the same manager, continuous, woken by NOTIFY.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib

import asyncpg
from _common import (
    PAYLOAD_NOTE,
    dsn,
    emit,
    log,
    paced,
    parse,
    percentiles,
    start_writer,
    wait_for_count,
)
from pgqueuer import AsyncpgDriver, Queries, QueueManager
from pgqueuer.domain.types import QueueExecutionMode

VERSION = f"pgqueuer {version('pgqueuer')}, asyncpg {version('asyncpg')}"
SETTINGS = "QueueManager.run(batch_size=1000), one entrypoint, no concurrency limit"


async def fresh(url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn(url))
    queries = Queries(AsyncpgDriver(conn))
    with contextlib.suppress(asyncpg.PostgresError):
        await queries.uninstall()
    await queries.install()
    await conn.execute("DROP TABLE IF EXISTS pgq_notes")
    await conn.execute("CREATE TABLE pgq_notes (id uuid PRIMARY KEY, version int, text text)")
    return conn


async def w1(args) -> None:  # type: ignore[no-untyped-def]
    conn = await fresh(args.url)
    queries = Queries(AsyncpgDriver(conn))

    async def create(i: int) -> uuid.UUID:
        note_id = uuid.uuid4()
        async with conn.transaction():
            await conn.execute("INSERT INTO pgq_notes VALUES ($1, 1, $2)", note_id, f"n{i}")
            await queries.enqueue("notes", json.dumps({"id": str(note_id)}).encode())
        return note_id

    async def change(note_id: uuid.UUID, i: int) -> None:
        async with conn.transaction():
            row = await conn.fetchrow("SELECT version, text FROM pgq_notes WHERE id = $1", note_id)
            done = await conn.execute(
                "UPDATE pgq_notes SET text = $1, version = version + 1 "
                "WHERE id = $2 AND version = $3",
                f"c{i}",
                note_id,
                row["version"],
            )
            assert done == "UPDATE 1"
            await queries.enqueue("notes", json.dumps({"id": str(note_id)}).encode())

    for i in range(10):
        await create(i)
    start = time.perf_counter()
    ids = [await create(i) for i in range(args.n)]
    for i, note_id in enumerate(ids):
        await change(note_id, i)
    elapsed = time.perf_counter() - start
    await conn.close()
    emit(2 * args.n / elapsed, "commands/s", version=VERSION, settings="asyncpg + enqueue")


def manager(conn: asyncpg.Connection, seen: list[float], timed: bool) -> QueueManager:
    qm = QueueManager(Queries(AsyncpgDriver(conn)))

    @qm.entrypoint("bench")
    async def handle(job) -> None:  # type: ignore[no-untyped-def]
        seen.append(time.time() - json.loads(job.payload)["t"] if timed else 0.0)

    return qm


async def w2(args) -> None:  # type: ignore[no-untyped-def]
    conn = await fresh(args.url)
    queries = Queries(AsyncpgDriver(conn))
    for start in range(0, args.backlog, 1000):
        n = min(1000, args.backlog - start)
        payloads = [json.dumps({"i": start + i, "note": PAYLOAD_NOTE}).encode() for i in range(n)]
        await queries.enqueue(["bench"] * n, payloads, [0] * n)
    seen: list[float] = []
    qm = manager(await asyncpg.connect(dsn(args.url)), seen, timed=False)
    start = time.perf_counter()
    await qm.run(
        batch_size=1000, mode=QueueExecutionMode.drain, dequeue_timeout=timedelta(seconds=1)
    )
    rate = len(seen) / (time.perf_counter() - start)
    assert len(seen) == args.backlog, (len(seen), args.backlog)
    await conn.close()
    emit(rate, "events/s", version=VERSION, settings=SETTINGS + ", mode=drain")


async def w3(args) -> None:  # type: ignore[no-untyped-def]
    conn = await fresh(args.url)
    seen: list[float] = []
    qm = manager(await asyncpg.connect(dsn(args.url)), seen, timed=True)
    task = asyncio.create_task(qm.run(batch_size=1000))
    await asyncio.sleep(1.0)
    writer = start_writer(args)
    await asyncio.to_thread(writer.wait)
    await wait_for_count(lambda: len(seen), int(args.rate * args.seconds), 60)
    qm.shutdown.set()
    await asyncio.wait_for(task, 30)
    await conn.close()
    emit(0.0, "ms", version=VERSION, settings=SETTINGS, **percentiles(seen))


async def writer(args) -> None:  # type: ignore[no-untyped-def]
    conn = await asyncpg.connect(dsn(args.url))
    queries = Queries(AsyncpgDriver(conn))

    async def commit(i: int) -> None:
        await queries.enqueue("bench", json.dumps({"i": i, "t": time.time()}).encode())

    await paced(args.rate, args.seconds, commit)
    await conn.close()


if __name__ == "__main__":
    a = parse()
    log(f"pgqueuer {a.workload}")
    asyncio.run({"w1": w1, "w2": w2, "w3": w3, "writer": writer}[a.workload](a))
