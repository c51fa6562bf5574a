"""Engine overhead: ``engine.run`` vs hand-written SQLAlchemy writing the same rows.

Workload per iteration: create an aggregate with 3 child entities and record 1 event; then load
it (with its entities), change it and record 1 event. The hand-written side does the same with
an AsyncSession: the same ORM rows, the version bump and check, and an equivalent outbox row,
on an engine of its own made with SQLAlchemy's defaults (``create_async_engine(url)``: no
pre-ping; on SQLite the same WAL pragmas as dddframe's, since those are storage settings, not
framework cost) and a session that does not expire on commit, as dddframe's does not. Rounds
alternate between the two so drift on the machine hits both. Prints ``ratio: X`` per database
(engine time / hand-written time; target <= 1.05), and the CPU time this process spent per
command on each side: their difference is the framework's own cost, which the machine's load
(other processes taking the cores) disturbs much less than the wall-clock ratio.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKey, String, event, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Mapped, mapped_column, relationship, selectinload

from dddframe import Aggregate, Application, Command, DomainEvent, Entity, Module, Repository
from dddframe.bus.inprocess import InProcessBus
from dddframe.ids import uuid7
from dddframe.outbox.tables import outbox_table

ITERATIONS = int(os.environ.get("BENCH_ENGINE_ITERATIONS", "25"))  # per round and side
ROUNDS = int(os.environ.get("BENCH_ENGINE_ROUNDS", "40"))
POSTGRES_URL = os.environ.get(
    "DDDFRAME_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


class BenchCreated(DomainEvent):
    __event_name__ = "Bench:Created"
    order_id: uuid.UUID
    lines: int


class BenchRenamed(DomainEvent):
    __event_name__ = "Bench:Renamed"
    order_id: uuid.UUID
    name: str


class BenchLine(Entity):
    __tablename__ = "bench_lines"
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("bench_orders.id"))
    sku: Mapped[str] = mapped_column(String(32))
    price: Mapped[Decimal]


class BenchOrder(Aggregate):
    __tablename__ = "bench_orders"
    name: Mapped[str] = mapped_column(String(64))
    lines: Mapped[list[BenchLine]] = relationship(cascade="all, delete-orphan")

    def rename(self, name: str) -> None:
        self.name = name
        self.domain_event(BenchRenamed(order_id=self.id, name=name))


class CreateBench(Command):
    name: str


class RenameBench(Command):
    order_id: uuid.UUID
    name: str


bench = Module("bench")


@bench.handles(CreateBench)
async def create_bench(cmd: CreateBench, orders: Repository[BenchOrder]) -> uuid.UUID:
    order = BenchOrder(
        name=cmd.name, lines=[BenchLine(sku=f"S{i}", price=Decimal("9.99")) for i in range(3)]
    )
    order.domain_event(BenchCreated(order_id=order.id, lines=3))
    orders.add(order)
    return order.id


@bench.handles(RenameBench)
async def rename_bench(cmd: RenameBench, orders: Repository[BenchOrder]) -> None:
    order = await orders.get(cmd.order_id)
    order.rename(cmd.name)


CPU: dict[str, list[float]] = {"engine": [], "hand": []}  # process CPU seconds per round


async def engine_round(app: Application) -> float:
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(ITERATIONS):
        order_id = await app.engine.run(CreateBench(name=f"o{i}"))
        await app.engine.run(RenameBench(order_id=order_id, name=f"r{i}"))
    CPU["engine"].append(time.process_time() - cpu)
    return time.perf_counter() - start


def _outbox_row(name: str, payload: str, order_id: uuid.UUID, version: int) -> dict[str, object]:
    return {
        "event_id": str(uuid7()),
        "name": name,
        "aggregate_type": "BenchOrder",
        "aggregate_id": str(order_id),
        "aggregate_version": version,
        "event_version": 1,
        "occurred_at": datetime.now(UTC),
        "payload": payload,
        "headers": '{"correlation_id":"%s"}' % uuid7(),  # noqa: UP031
        "status": 0,
    }


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "busy_timeout=30000",
        "foreign_keys=ON",
    ):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def plain_sqlalchemy(url: str) -> async_sessionmaker[AsyncSession]:
    """Sessions on an engine with SQLAlchemy's own defaults."""
    engine = create_async_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def hand_round(sessions: async_sessionmaker[AsyncSession]) -> float:
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(ITERATIONS):
        async with sessions() as s:
            order = BenchOrder(
                id=uuid7(),
                version=1,
                name=f"o{i}",
                lines=[BenchLine(sku=f"S{j}", price=Decimal("9.99")) for j in range(3)],
            )
            s.add(order)
            await s.flush()
            event = BenchCreated(order_id=order.id, lines=3).model_dump_json()
            await s.execute(
                insert(outbox_table), [_outbox_row("Bench:Created", event, order.id, 1)]
            )
            await s.commit()
            order_id = order.id
        async with sessions() as s:
            loaded = await s.get(BenchOrder, order_id, options=[selectinload(BenchOrder.lines)])
            assert loaded is not None
            loaded.name = f"r{i}"
            loaded.version = 2
            await s.flush()
            event = BenchRenamed(order_id=order_id, name=f"r{i}").model_dump_json()
            await s.execute(
                insert(outbox_table), [_outbox_row("Bench:Renamed", event, order_id, 2)]
            )
            await s.commit()
    CPU["hand"].append(time.process_time() - cpu)
    return time.perf_counter() - start


async def measure(label: str, url: str) -> None:
    app = Application([bench], database_url=url, bus=InProcessBus(), consume=False)
    async with app:
        await app.drop_schema()
        await app.create_schema()
        sessions = plain_sqlalchemy(url)
        await engine_round(app)  # warm up both paths
        await hand_round(sessions)
        CPU["engine"].clear()
        CPU["hand"].clear()
        engine_times, hand_times = [], []
        for n in range(ROUNDS):  # short rounds, alternating which side goes first
            if n % 2:
                hand_times.append(await hand_round(sessions))
                engine_times.append(await engine_round(app))
            else:
                engine_times.append(await engine_round(app))
                hand_times.append(await hand_round(sessions))
        await sessions.kw["bind"].dispose()
        await app.drop_schema()
    e, h = statistics.median(engine_times), statistics.median(hand_times)
    ratios = [a / b for a, b in zip(engine_times, hand_times, strict=True)]
    quartiles = statistics.quantiles(ratios, n=4)
    per = 2 * ITERATIONS
    print(
        f"{label}: engine {e / per * 1e6:.0f} us/command, hand-written {h / per * 1e6:.0f} "
        f"us/command ({ROUNDS} rounds x {per} commands each side, median)"
    )
    print(
        f"{label} ratio: {statistics.median(ratios):.3f} (median of the rounds' ratios; "
        f"quartiles {quartiles[0]:.3f} .. {quartiles[2]:.3f})"
    )
    extra = [(a - b) / per * 1e6 for a, b in zip(CPU["engine"], CPU["hand"], strict=True)]
    cq = statistics.quantiles(extra, n=4)
    print(
        f"{label} cpu: engine {statistics.median(CPU['engine']) / per * 1e6:.0f} us/command, "
        f"hand-written {statistics.median(CPU['hand']) / per * 1e6:.0f} us/command; the "
        f"engine's own cost {statistics.median(extra):.0f} us/command (quartiles "
        f"{cq[0]:.0f} .. {cq[2]:.0f})"
    )


async def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        await measure("sqlite", f"sqlite+aiosqlite:///{tmp}/bench.db")
    try:
        await measure("postgresql", POSTGRES_URL)
    except OSError as exc:
        print(f"postgresql skipped: {exc}")
