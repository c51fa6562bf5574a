"""dddframe: W1 through ``engine.run`` (in-process bus, nothing consumed), W2 and W3 through
the database bus as in benchmarks/database_bus.py (8 lanes, ``limit_per_run=1000``, positions
persisted, NOTIFY wake-up). Runs in the project's own virtualenv."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout (dddframe, benchmarks)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, log, paced, parse, percentiles, start_writer
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

import dddframe
from benchmarks import database_bus as db_bench
from dddframe import Aggregate, Application, Command, DomainEvent, Module, Repository
from dddframe.bus.database import DatabaseBus
from dddframe.bus.inprocess import InProcessBus
from dddframe.cli.process import freeze_startup_heap
from dddframe.testing import reset_database

VERSION = getattr(dddframe, "__version__", "checkout")


class NoteCreated(DomainEvent):
    __event_name__ = "Peer:NoteCreated"
    note_id: uuid.UUID
    text: str


class NoteChanged(DomainEvent):
    __event_name__ = "Peer:NoteChanged"
    note_id: uuid.UUID
    text: str


class PeerNote(Aggregate):
    __tablename__ = "peer_notes"
    text: Mapped[str] = mapped_column(String(64))

    def change(self, text: str) -> None:
        self.text = text
        self.domain_event(NoteChanged(note_id=self.id, text=text))


class CreateNote(Command):
    text: str


class ChangeNote(Command):
    note_id: uuid.UUID
    text: str


peer = Module("peer")


@peer.handles(CreateNote)
async def create_note(cmd: CreateNote, notes: Repository[PeerNote]) -> uuid.UUID:
    note = PeerNote(text=cmd.text)
    note.domain_event(NoteCreated(note_id=note.id, text=cmd.text))
    notes.add(note)
    return note.id


@peer.handles(ChangeNote)
async def change_note(cmd: ChangeNote, notes: Repository[PeerNote]) -> None:
    (await notes.get(cmd.note_id)).change(cmd.text)


async def w1(args) -> None:  # type: ignore[no-untyped-def]
    await reset_database(args.url)
    app = Application([peer], args.url, bus=InProcessBus(), consume=False)
    async with app:
        await app.create_schema()
        ids = [await app.engine.run(CreateNote(text="warm")) for _ in range(10)]
        start = time.perf_counter()
        ids = [await app.engine.run(CreateNote(text=f"n{i}")) for i in range(args.n)]
        for i, note_id in enumerate(ids):
            await app.engine.run(ChangeNote(note_id=note_id, text=f"c{i}"))
        elapsed = time.perf_counter() - start
    emit(2 * args.n / elapsed, "commands/s", version=VERSION, settings="engine.run, no pre-ping")


def bus() -> DatabaseBus:
    return DatabaseBus(concurrency=8, limit_per_run=1000, run_interval=5.0)


async def w2(args) -> None:  # type: ignore[no-untyped-def]
    await reset_database(args.url)
    async with Application([db_bench.bench_module()], args.url, bus=bus(), consume=False) as app:
        await app.create_schema()
        await db_bench.fill_backlog(app, args.backlog)
    db_bench.received.clear()
    db_bench.target = args.backlog
    db_bench.done.clear()
    worker = Application([db_bench.bench_module()], args.url, bus=bus())
    async with worker:
        start = time.perf_counter()
        await worker.create_schema()  # starts the bus: it takes the leases and delivers
        freeze_startup_heap()
        await db_bench.done.wait()
        await worker.drain(timeout=600)  # positions persisted
        rate = args.backlog / (time.perf_counter() - start)
    emit(rate, "events/s", version=VERSION, settings="database bus, 8 lanes, batches of 1000")


async def w3(args) -> None:  # type: ignore[no-untyped-def]
    await reset_database(args.url)
    worker = Application([db_bench.bench_module()], args.url, bus=bus())
    async with worker:
        await worker.create_schema()
        freeze_startup_heap()
        db_bench.latencies.clear()
        db_bench.target = int(args.rate * args.seconds)
        db_bench.done.clear()
        await asyncio.sleep(1.0)  # LISTEN connection ready
        writer = start_writer(args)
        await asyncio.to_thread(writer.wait)
        await asyncio.wait_for(db_bench.done.wait(), timeout=60)
    emit(0.0, "ms", version=VERSION, **percentiles(db_bench.latencies))


async def writer(args) -> None:  # type: ignore[no-untyped-def]
    app = Application([db_bench.bench_module()], args.url, bus=bus(), consume=False)
    async with app:

        async def commit(i: int) -> None:
            await app.publish("Bench:Timed", {"i": i}, key=str(i % 50))

        await paced(args.rate, args.seconds, commit)


if __name__ == "__main__":
    a = parse()
    log(f"dddframe {a.workload}")
    asyncio.run({"w1": w1, "w2": w2, "w3": w3, "writer": writer}[a.workload](a))
