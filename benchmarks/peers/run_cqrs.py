"""python-cqrs: its SQLAlchemy transactional outbox and its ``EventProducer``.

W1: hand-written SQLAlchemy rows plus ``SqlAlchemyOutboxedEventRepository.add(event)`` on the
same ``AsyncSession``, then ``repository.commit()`` (the documented write side; the mediator
and its request handlers are left out, they add no database work).
W2: ``EventProducer.event_batch_generator(1000)`` + ``send_message`` for each row (which
updates its status to PRODUCED), ``repository.commit()`` per batch, as its docstrings direct;
the message broker is a callback that hands the message to the listener. W3: the same loop
polling every 10 ms when idle (python-cqrs has no wake-up).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cqrs
import pydantic
from _common import (
    PAYLOAD_NOTE,
    emit,
    log,
    paced,
    parse,
    percentiles,
    start_writer,
)
from cqrs.mapping.outbox import OutboxedEventMap
from cqrs.message_brokers import protocol as broker_protocol
from cqrs.message_brokers.producer import EventProducer
from cqrs.outbox.sqlalchemy import OutboxModel, SqlAlchemyOutboxedEventRepository
from sqlalchemy import Integer, String
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

VERSION = f"python-cqrs {version('python-cqrs')}, SQLAlchemy {version('sqlalchemy')}"
SETTINGS = "EventProducer, batches of 1000, commit per batch"


class NotePayload(pydantic.BaseModel):
    i: int = 0
    t: float = 0.0
    note: str = ""


class NoteEvent(cqrs.PydanticNotificationEvent[NotePayload]):
    event_name: str = "NoteEvent"


OutboxedEventMap.register("NoteEvent", NoteEvent)


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "cqrs_notes"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(String(64))
    __mapper_args__ = {"version_id_col": version}


async def fresh(url: str):  # type: ignore[no-untyped-def]
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        for metadata in (Base.metadata, OutboxModel.metadata):
            await conn.run_sync(metadata.drop_all)
            await conn.run_sync(metadata.create_all)
    return engine, async_sessionmaker(engine, expire_on_commit=False)


async def w1(args) -> None:  # type: ignore[no-untyped-def]
    engine, sessions = await fresh(args.url)

    async def create(i: int) -> uuid.UUID:
        async with sessions() as s:
            note = Note(id=uuid.uuid4(), text=f"n{i}")
            s.add(note)
            outbox = SqlAlchemyOutboxedEventRepository(s)
            outbox.add(NoteEvent(payload=NotePayload(i=i)))
            await outbox.commit()
            return note.id

    async def change(note_id: uuid.UUID, i: int) -> None:
        async with sessions() as s:
            note = await s.get(Note, note_id)
            assert note is not None
            note.text = f"c{i}"
            outbox = SqlAlchemyOutboxedEventRepository(s)
            outbox.add(NoteEvent(payload=NotePayload(i=i)))
            await outbox.commit()

    for i in range(10):
        await create(i)
    start = time.perf_counter()
    ids = [await create(i) for i in range(args.n)]
    for i, note_id in enumerate(ids):
        await change(note_id, i)
    elapsed = time.perf_counter() - start
    await engine.dispose()
    emit(2 * args.n / elapsed, "commands/s", version=VERSION, settings="session + outbox.add")


class CallbackBroker(broker_protocol.MessageBroker):
    def __init__(self, seen: list[float], timed: bool) -> None:
        self.seen, self.timed = seen, timed

    async def send_message(self, message: broker_protocol.Message) -> None:
        t = message.payload["payload"]["t"] if self.timed else 0.0
        self.seen.append(time.time() - t if self.timed else 0.0)


async def produce(sessions, seen: list[float], target: int, timed: bool) -> None:  # type: ignore[no-untyped-def]
    async with sessions() as s:
        repository = SqlAlchemyOutboxedEventRepository(s)
        producer = EventProducer(CallbackBroker(seen, timed), repository)
        async for batch in producer.event_batch_generator(batch_size=1000):
            for event in batch:
                await producer.send_message(event)
            await repository.commit()
            if len(seen) >= target:
                return
            if not batch:
                await asyncio.sleep(0.01)


async def w2(args) -> None:  # type: ignore[no-untyped-def]
    engine, sessions = await fresh(args.url)
    for start in range(0, args.backlog, 1000):
        async with sessions() as s:
            outbox = SqlAlchemyOutboxedEventRepository(s)
            for i in range(start, min(start + 1000, args.backlog)):
                outbox.add(NoteEvent(payload=NotePayload(i=i, note=PAYLOAD_NOTE)))
            await outbox.commit()
    seen: list[float] = []
    start = time.perf_counter()
    await produce(sessions, seen, args.backlog, timed=False)
    rate = args.backlog / (time.perf_counter() - start)
    await engine.dispose()
    emit(rate, "events/s", version=VERSION, settings=SETTINGS)


async def w3(args) -> None:  # type: ignore[no-untyped-def]
    engine, sessions = await fresh(args.url)
    seen: list[float] = []
    task = asyncio.create_task(produce(sessions, seen, int(args.rate * args.seconds), True))
    await asyncio.sleep(1.0)
    writer = start_writer(args)
    await asyncio.to_thread(writer.wait)
    await asyncio.wait_for(task, 60)
    await engine.dispose()
    emit(0.0, "ms", version=VERSION, settings=SETTINGS + ", idle poll 10 ms", **percentiles(seen))


async def writer(args) -> None:  # type: ignore[no-untyped-def]
    engine = create_async_engine(args.url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def commit(i: int) -> None:
        async with sessions() as s:
            outbox = SqlAlchemyOutboxedEventRepository(s)
            outbox.add(NoteEvent(payload=NotePayload(i=i, t=time.time())))
            await outbox.commit()

    await paced(args.rate, args.seconds, commit)
    await engine.dispose()


if __name__ == "__main__":
    a = parse()
    log(f"python-cqrs {a.workload}")
    asyncio.run({"w1": w1, "w2": w2, "w3": w3, "writer": writer}[a.workload](a))
