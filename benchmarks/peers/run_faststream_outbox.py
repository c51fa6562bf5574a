"""faststream-outbox: the standalone outbox queue (the table is the queue, rows processed in
place), asyncpg driver so the fetch loop LISTENs and ``publish`` NOTIFYs.

W1: hand-written SQLAlchemy rows plus ``broker.publish(body, queue=..., session=session)`` in
the same transaction (its documented producer side). W2: one subscriber, ``max_workers=8``,
``fetch_batch_size=1000``, ``terminal_flush_batch_size=100`` (acknowledged rows deleted in
batches); the time runs until every row is deleted (its durable "position"). W3: the same
subscriber woken by NOTIFY.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PAYLOAD_NOTE, emit, log, paced, parse, percentiles, start_writer, wait_for_count
from faststream_outbox import OutboxBroker, make_outbox_table
from sqlalchemy import Integer, MetaData, String, func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

VERSION = f"faststream-outbox {version('faststream-outbox')}, faststream {version('faststream')}"
SETTINGS = "max_workers=8, fetch_batch_size=1000, terminal_flush_batch_size=100"
metadata = MetaData()
outbox = make_outbox_table(metadata, table_name="fso_outbox")


class Base(DeclarativeBase):
    metadata = metadata


class Note(Base):
    __tablename__ = "fso_notes"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(String(64))
    __mapper_args__ = {"version_id_col": version}


async def fresh(url: str):  # type: ignore[no-untyped-def]
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
        await conn.run_sync(metadata.create_all)
    return engine


async def w1(args) -> None:  # type: ignore[no-untyped-def]
    engine = await fresh(args.url)
    broker = OutboxBroker(engine, outbox_table=outbox, logger=None)
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def create(i: int) -> uuid.UUID:
        async with sessions() as s, s.begin():
            note = Note(id=uuid.uuid4(), text=f"n{i}")
            s.add(note)
            await broker.publish({"id": str(note.id), "text": note.text}, queue="notes", session=s)
            return note.id

    async def change(note_id: uuid.UUID, i: int) -> None:
        async with sessions() as s, s.begin():
            note = await s.get(Note, note_id)
            assert note is not None
            note.text = f"c{i}"
            await broker.publish({"id": str(note_id), "text": note.text}, queue="notes", session=s)

    for i in range(10):
        await create(i)
    start = time.perf_counter()
    ids = [await create(i) for i in range(args.n)]
    for i, note_id in enumerate(ids):
        await change(note_id, i)
    elapsed = time.perf_counter() - start
    await engine.dispose()
    emit(2 * args.n / elapsed, "commands/s", version=VERSION, settings="session + publish")


def subscribed(engine, seen: list[float], timed: bool) -> OutboxBroker:  # type: ignore[no-untyped-def]
    broker = OutboxBroker(engine, outbox_table=outbox, logger=None)

    @broker.subscriber(
        "bench",
        max_workers=8,
        fetch_batch_size=1000,
        terminal_flush_batch_size=100,
        min_fetch_interval=0.01,
    )
    async def handle(body: dict) -> None:  # type: ignore[type-arg]
        seen.append(time.time() - body["t"] if timed else 0.0)

    return broker


async def remaining(engine) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(outbox))).scalar_one())


async def w2(args) -> None:  # type: ignore[no-untyped-def]
    engine = await fresh(args.url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    producer = OutboxBroker(engine, outbox_table=outbox, logger=None)
    for start in range(0, args.backlog, 1000):
        bodies = [{"i": i, "note": PAYLOAD_NOTE} for i in range(start, start + 1000)]
        async with sessions() as s, s.begin():
            await producer.publish_batch(*bodies[: args.backlog - start], queue="bench", session=s)
    seen: list[float] = []
    broker = subscribed(engine, seen, timed=False)
    start = time.perf_counter()
    await broker.start()
    await wait_for_count(lambda: len(seen), args.backlog, 900)
    while await remaining(engine):  # noqa: ASYNC110 (acknowledged = deleted; polled)
        await asyncio.sleep(0.01)
    rate = args.backlog / (time.perf_counter() - start)
    await broker.stop()
    await engine.dispose()
    emit(rate, "events/s", version=VERSION, settings=SETTINGS)


async def w3(args) -> None:  # type: ignore[no-untyped-def]
    engine = await fresh(args.url)
    seen: list[float] = []
    broker = subscribed(engine, seen, timed=True)
    await broker.start()
    await asyncio.sleep(1.0)
    writer = start_writer(args)
    await asyncio.to_thread(writer.wait)
    await wait_for_count(lambda: len(seen), int(args.rate * args.seconds), 60)
    await broker.stop()
    await engine.dispose()
    emit(0.0, "ms", version=VERSION, settings=SETTINGS, **percentiles(seen))


async def writer(args) -> None:  # type: ignore[no-untyped-def]
    engine = create_async_engine(args.url)
    broker = OutboxBroker(engine, outbox_table=outbox, logger=None)
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def commit(i: int) -> None:
        async with sessions() as s, s.begin():
            await broker.publish({"i": i, "t": time.time()}, queue="bench", session=s)

    await paced(args.rate, args.seconds, commit)
    await engine.dispose()


if __name__ == "__main__":
    a = parse()
    log(f"faststream-outbox {a.workload}")
    asyncio.run({"w1": w1, "w2": w2, "w3": w3, "writer": writer}[a.workload](a))
