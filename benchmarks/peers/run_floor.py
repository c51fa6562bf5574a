"""The floors: what a hand-written program does with none of the guarantees.

W1: hand-written SQLAlchemy (``AsyncSession``, SQLAlchemy's default engine): insert the row and
an outbox row in one transaction; load it, change it with a version check, one outbox row.
W2: the naive loop of benchmarks/database_bus.py (``SELECT ... WHERE id > :last ORDER BY id
LIMIT 1000``, payload decoded, one UPDATE of the offset per batch) on a plain outbox table.
W3: the same loop woken by LISTEN/NOTIFY (the writer NOTIFYs in its transaction). Both skip rows
whose ids commit out of order; nothing retries, parks or dead-letters.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib

import asyncpg
import sqlalchemy
from _common import (
    PAYLOAD_NOTE,
    dsn,
    emit,
    log,
    paced,
    parse,
    percentiles,
    start_writer,
)
from sqlalchemy import BigInteger, Integer, String, Text, insert, select, text, update
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "floor_notes"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(String(64))
    __mapper_args__ = {"version_id_col": version}


class Outbox(Base):
    __tablename__ = "floor_outbox"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    aggregate_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)


class Offset(Base):
    __tablename__ = "floor_offsets"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger)


VERSION = f"SQLAlchemy {sqlalchemy.__version__}, asyncpg {asyncpg.__version__}"


async def fresh(url: str):  # type: ignore[no-untyped-def]
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
        await conn.execute(insert(Offset).values(name="naive", last_id=0))
    return engine


async def w1(args) -> None:  # type: ignore[no-untyped-def]
    engine = await fresh(args.url)
    sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)

    async def create(i: int) -> uuid.UUID:
        async with sessions() as s:
            note = Note(id=uuid.uuid4(), text=f"n{i}")
            s.add(note)
            s.add(Outbox(name="Created", aggregate_id=str(note.id), payload='{"text": "n"}'))
            await s.commit()
            return note.id

    async def change(note_id: uuid.UUID, i: int) -> None:
        async with sessions() as s:
            note = await s.get(Note, note_id)
            assert note is not None
            note.text = f"c{i}"
            s.add(Outbox(name="Changed", aggregate_id=str(note_id), payload='{"text": "c"}'))
            await s.commit()

    for i in range(10):
        await create(i)
    start = time.perf_counter()
    ids = [await create(i) for i in range(args.n)]
    for i, note_id in enumerate(ids):
        await change(note_id, i)
    elapsed = time.perf_counter() - start
    await engine.dispose()
    emit(2 * args.n / elapsed, "commands/s", version=VERSION, settings="AsyncSession, defaults")


async def w2(args) -> None:  # type: ignore[no-untyped-def]
    engine = await fresh(args.url)
    payload = json.dumps({"i": 0, "note": PAYLOAD_NOTE})
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO floor_outbox (name, aggregate_id, payload) "
                "SELECT 'Bench:Backlog', (g % 1000)::text, :p FROM generate_series(1, :n) g"
            ),
            {"p": payload, "n": args.backlog},
        )
    start = time.perf_counter()
    last, seen = 0, 0
    async with engine.connect() as conn:
        while seen < args.backlog:
            rows = (
                await conn.execute(
                    select(Outbox.id, Outbox.payload)
                    .where(Outbox.id > last)
                    .order_by(Outbox.id)
                    .limit(1000)
                )
            ).all()
            for row in rows:
                json.loads(row.payload)
            last = rows[-1].id
            seen += len(rows)
            await conn.execute(update(Offset).where(Offset.name == "naive").values(last_id=last))
            await conn.commit()
    rate = args.backlog / (time.perf_counter() - start)
    await engine.dispose()
    emit(rate, "events/s", version=VERSION, settings="naive loop, batches of 1000")


async def w3(args) -> None:  # type: ignore[no-untyped-def]
    engine = await fresh(args.url)
    wake = asyncio.Event()
    listener = await asyncpg.connect(dsn(args.url))
    await listener.add_listener("floor_outbox", lambda *_: wake.set())
    latencies: list[float] = []
    target = int(args.rate * args.seconds)
    writer = start_writer(args)
    last = 0
    async with engine.connect() as conn:
        while len(latencies) < target:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=1.0)
            wake.clear()
            rows = (
                await conn.execute(
                    select(Outbox.id, Outbox.payload).where(Outbox.id > last).order_by(Outbox.id)
                )
            ).all()
            now = time.time()
            for row in rows:
                latencies.append(now - json.loads(row.payload)["t"])
            if rows:
                last = rows[-1].id
                await conn.execute(
                    update(Offset).where(Offset.name == "naive").values(last_id=last)
                )
            await conn.commit()
    await asyncio.to_thread(writer.wait)
    await listener.close()
    await engine.dispose()
    emit(0.0, "ms", version=VERSION, **percentiles(latencies))


async def writer(args) -> None:  # type: ignore[no-untyped-def]
    engine = create_async_engine(args.url)

    async def commit(i: int) -> None:
        async with engine.begin() as conn:
            payload = json.dumps({"i": i, "t": time.time()})
            await conn.execute(
                insert(Outbox).values(name="Bench:Timed", aggregate_id=str(i % 50), payload=payload)
            )
            await conn.execute(text("SELECT pg_notify('floor_outbox', '')"))

    await paced(args.rate, args.seconds, commit)
    await engine.dispose()


if __name__ == "__main__":
    a = parse()
    log(f"floor {a.workload}")
    asyncio.run({"w1": w1, "w2": w2, "w3": w3, "writer": writer}[a.workload](a))
