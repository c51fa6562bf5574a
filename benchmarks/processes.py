"""Process managers: step cost against plain listeners, and timer lateness under a large
pending set.

1. Steps: N events, each delivered through the subscription's ``deliver`` (no bus between, so
   only the framework's work is measured): a process manager's step that updates its state and
   sends one command, against a listener doing the same writes with ``ctx.run`` (one command
   updating a state row, one inserting the effect row, each with its inbox entry). Rounds
   alternate. Prints ``ratio: X`` (process time / listener time; target <= 1.3).
2. Timers: ``BENCH_PENDING_TIMERS`` (default 100,000) timers due in an hour sit in the table
   while ``BENCH_DUE_TIMERS`` (default 300) fall due over 10 s; a worker fires them. Prints the
   lateness (fire time - due time) p50/p99 (target p99 <= 1 s) beside the floor: the same
   lateness with no pending timers.

3. Rebuild: a projection (one row per cart, 1,000 carts) rebuilt from a history of
   ``BENCH_REBUILD_EVENTS`` (default 1,000,000) events by ``app.projections.rebuild``, against
   the naive outbox read of the same rows (SELECT by position in batches, payload decoded).
   Three handlers: rows through ``view.get``/``view.put`` (written once per batch), one UPDATE
   per event through ``view.session`` (replayed over the last ``BENCH_REBUILD_SQL_EVENTS``,
   default 50,000, since each costs a round trip), and one that writes nothing (the framework's
   replay alone). Prints events/s and the ratios (target >= 20,000 events/s).

PostgreSQL (``DDDFRAME_POSTGRES_URL``, default the ``test`` database).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.orm import Mapped, mapped_column

from dddframe import (
    Aggregate,
    Application,
    Command,
    DomainEvent,
    Envelope,
    EventContext,
    Module,
    ProcessContext,
    ProcessManager,
    Projection,
    ProjectionView,
    Repository,
)
from dddframe.bus.inprocess import InProcessBus
from dddframe.outbox.records import envelope_to_row, utcnow
from dddframe.outbox.sequencer import Sequencer
from dddframe.outbox.tables import outbox_table, schedules_table
from dddframe.processes.timers import ProcessTimeout
from dddframe.testing import reset_database

POSTGRES_URL = os.environ.get(
    "DDDFRAME_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
STEPS = int(os.environ.get("BENCH_STEPS", "200"))  # per round and side
ROUNDS = int(os.environ.get("BENCH_STEP_ROUNDS", "6"))
PENDING = int(os.environ.get("BENCH_PENDING_TIMERS", "100000"))
DUE = int(os.environ.get("BENCH_DUE_TIMERS", "300"))
REBUILD = int(os.environ.get("BENCH_REBUILD_EVENTS", "1000000"))
SQL_EVENTS = int(os.environ.get("BENCH_REBUILD_SQL_EVENTS", "50000"))

FIRED: dict[str, float] = {}


class BenchTicked(DomainEvent):
    __event_name__ = "BenchPm:Ticked"
    key: str
    n: int


class BenchState(Aggregate):
    """The listener side's state row (one per key), as the process's own row."""

    __tablename__ = "bench_pm_states"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # type: ignore[assignment]
    ticks: Mapped[int] = mapped_column(default=0)


class BenchEffect(Aggregate):
    __tablename__ = "bench_pm_effects"
    key: Mapped[str] = mapped_column(String(64))


class CountTick(Command):
    key: str


class RecordEffect(Command):
    key: str


class BenchProcess(ProcessManager):
    __tablename__ = "bench_pm_processes"
    ticks: Mapped[int] = mapped_column(default=0)

    def on_ticked(self, event: BenchTicked, ctx: ProcessContext) -> None:
        self.ticks += 1
        ctx.send(RecordEffect(key=event.key))

    def on_late_timeout(self) -> None:
        FIRED[self.id] = time.time()


class BenchListener:
    async def on_ticked(self, event: BenchTicked, ctx: EventContext) -> None:
        await ctx.run(CountTick(key=event.key))
        await ctx.run(RecordEffect(key=event.key))


def _module() -> Module:
    m = Module("benchpm")

    @m.handles(CountTick)
    async def count(cmd: CountTick, states: Repository[BenchState]) -> None:
        state = await states.find(cmd.key)
        if state is None:
            state = BenchState(id=cmd.key, ticks=0)
            states.add(state)
        state.ticks += 1

    @m.handles(RecordEffect)
    async def record(cmd: RecordEffect, effects: Repository[BenchEffect]) -> None:
        effects.add(BenchEffect(key=cmd.key))

    m.controller(BenchListener)
    m.listen("BenchPm:Ticked", "BenchListener.on_ticked")
    m.process(
        BenchProcess,
        correlate_by="key",
        starts_with="BenchPm:Ticked",
        listen={"BenchPm:Ticked": "on_ticked"},
        timeouts=["late"],
    )
    return m


def _events(prefix: str, n: int) -> list[Envelope]:
    return [
        Envelope.new(
            "BenchPm:Ticked",
            BenchTicked(key=f"{prefix}-{i % 50}", n=i).model_dump_json(),
            headers={},
        )
        for i in range(n)
    ]


async def _steps(url: str) -> None:
    await reset_database(url)
    app = Application([_module()], url, bus=InProcessBus(), consume=False)
    async with app:
        await app.create_schema()
        process = next(s for s in app.subscriptions if s.name == "benchpm.BenchProcess")
        listener = next(s for s in app.subscriptions if s.listener == "BenchListener.on_ticked")
        times: dict[str, list[float]] = {"process": [], "listener": []}
        for r in range(ROUNDS):
            order = [("process", process), ("listener", listener)]
            for name, sub in order if r % 2 == 0 else reversed(order):
                events = _events(f"{name}{r}", STEPS)
                start = time.perf_counter()
                for e in events:
                    await sub.deliver(e, 1, sub)
                times[name].append((time.perf_counter() - start) / STEPS)
        p, lst = statistics.median(times["process"]), statistics.median(times["listener"])
        ratios = sorted(a / b for a, b in zip(times["process"], times["listener"], strict=True))
        print(
            f"steps (PostgreSQL, {STEPS} events x {ROUNDS} rounds): process manager "
            f"{1 / p:,.0f} steps/s ({p * 1000:.2f} ms), listener with the same writes "
            f"{1 / lst:,.0f}/s ({lst * 1000:.2f} ms)"
        )
        print(f"ratio: {p / lst:.3f} (per-round ratios {ratios[0]:.2f}-{ratios[-1]:.2f})")


async def _lateness(url: str, pending: int) -> list[float]:
    await reset_database(url)
    FIRED.clear()
    writer = Application([_module()], url, consume=False)
    due: dict[str, float] = {}
    async with writer:
        await writer.create_schema()

        def rows(first: int, count: int, late: bool) -> tuple[list[Any], list[Any]]:
            now = utcnow()
            instances: list[dict[str, Any]] = []
            schedules: list[dict[str, Any]] = []
            for i in range(first, first + count):
                key = f"t{i}"
                token = uuid.uuid4()
                offset = timedelta(seconds=2 + 10 * (i - first) / count)
                at = now + (offset if late else timedelta(hours=1))
                if late:
                    due[key] = at.timestamp()
                instances.append(
                    {
                        "id": key,
                        "version": 1,
                        "ticks": 0,
                        "completed": False,
                        "timers": {"late": str(token)},
                    }
                )
                fire = ProcessTimeout(
                    process="BenchProcess", key=key, timer="late", token=str(token)
                )
                schedules.append(writer.schedules.row(fire, due=at, headers={}, schedule_id=token))
            return instances, schedules

        async with writer.database.connect() as conn:
            for first in range(0, pending, 5000):  # the pending set, due in an hour
                instances, schedules = rows(first, min(5000, pending - first), late=False)
                await conn.execute(insert(BenchProcess.__table__), instances)
                await conn.execute(insert(schedules_table), schedules)
                await conn.commit()
            # The measured timers: due 2 to 12 s from now, written last.
            instances, schedules = rows(pending, DUE, late=True)
            await conn.execute(insert(BenchProcess.__table__), instances)
            await conn.execute(insert(schedules_table), schedules)
            await conn.commit()
    worker = Application([_module()], url, bus=InProcessBus())
    async with worker:
        async with asyncio.timeout(120):
            while len(FIRED) < DUE:  # noqa: ASYNC110 - the steps fill a plain dict
                await asyncio.sleep(0.1)
        async with worker.database.connect() as conn:
            left = await conn.scalar(select(schedules_table.c.id).limit(1))
        assert left is not None
    return sorted(FIRED[k] - due[k] for k in due)


rebuild_metadata = MetaData()
cart_sizes = Table(
    "bench_rb_cart_sizes",
    rebuild_metadata,
    Column("cart_id", String(40), primary_key=True),
    Column("size", Integer, nullable=False),
)


class BenchCartSizes(Projection):
    tables = (cart_sizes,)

    async def on_added(self, event: dict[str, Any], view: ProjectionView) -> None:
        t = view.table(cart_sizes)
        done = await view.session.execute(
            t.update().where(t.c.cart_id == event["cart"]).values(size=t.c.size + 1)
        )
        if not done.rowcount:  # type: ignore[attr-defined]
            await view.session.execute(t.insert().values(cart_id=event["cart"], size=1))


rows_sizes = Table(
    "bench_rb_row_sizes",
    rebuild_metadata,
    Column("cart_id", String(40), primary_key=True),
    Column("size", Integer, nullable=False),
)


class BenchRowSizes(Projection):
    """The same read model written through ``view.get``/``view.put`` (rows written per batch)."""

    tables = (rows_sizes,)

    async def on_added(self, event: dict[str, Any], view: ProjectionView) -> None:
        row = await view.get(rows_sizes, event["cart"])
        size = row["size"] + 1 if row is not None else 1
        view.put(rows_sizes, {"cart_id": event["cart"], "size": size})


class BenchNothing(Projection):
    """The framework's replay alone: decoding, the handler call, checkpoints; no writes."""

    tables = (Table("bench_rb_nothing", rebuild_metadata, Column("id", Integer, primary_key=True)),)
    seen = 0

    async def on_added(self, event: dict[str, Any], view: ProjectionView) -> None:
        BenchNothing.seen += 1


def _rebuild_module() -> Module:
    m = Module("benchrb")
    m.event("BenchRb:Added")
    m.projection(BenchCartSizes, listen={"BenchRb:Added": "on_added"})
    m.projection(BenchRowSizes, listen={"BenchRb:Added": "on_added"})
    m.projection(BenchNothing, listen={"BenchRb:Added": "on_added"})
    return m


async def _rebuild(url: str) -> None:
    await reset_database(url)
    app = Application([_rebuild_module()], url, consume=False)
    async with app:
        await app.create_schema()
        async with app.database.connect() as conn:
            for first in range(0, REBUILD, 10_000):
                rows = []
                for i in range(first, min(REBUILD, first + 10_000)):
                    env = Envelope.new(
                        "BenchRb:Added",
                        f'{{"cart": "c{i % 1000}"}}',
                        aggregate_type="Cart",
                        aggregate_id=f"c{i % 1000}",
                        aggregate_version=i // 1000 + 1,
                        headers={},
                    )
                    rows.append(envelope_to_row(env))
                await conn.execute(insert(outbox_table), rows)
                await conn.commit()
        sequencer = Sequencer(batch_size=50_000)
        async with app.database.connect() as conn:
            while await sequencer.sequence(conn):
                pass
        # One UPDATE per event costs a round trip each: replayed over the last SQL_EVENTS only.
        sql_events = min(REBUILD, SQL_EVENTS)
        start = time.perf_counter()
        result = await app.projections.rebuild(
            BenchCartSizes, batch_size=2000, from_position=REBUILD - sql_events
        )
        rebuild = (time.perf_counter() - start) * REBUILD / sql_events
        start = time.perf_counter()
        by_rows = await app.projections.rebuild(BenchRowSizes, batch_size=2000)
        rowwise = time.perf_counter() - start
        start = time.perf_counter()
        bare = await app.projections.rebuild(BenchNothing, batch_size=2000)
        framework = time.perf_counter() - start
        start = time.perf_counter()
        read, after = 0, 0
        async with app.database.connect() as conn:
            while True:
                batch = (
                    await conn.execute(
                        select(outbox_table.c.position, outbox_table.c.name, outbox_table.c.payload)
                        .where(outbox_table.c.position > after)
                        .order_by(outbox_table.c.position)
                        .limit(2000)
                    )
                ).all()
                if not batch:
                    break
                read += sum(1 for r in batch if json.loads(r.payload))
                after = batch[-1].position
        naive = time.perf_counter() - start
        async with app.projections.read(BenchCartSizes) as view:
            by_sql = set((await view.session.execute(select(view.table(cart_sizes)))).all())
        async with app.projections.read(BenchRowSizes) as view:
            by_put = set((await view.session.execute(select(view.table(rows_sizes)))).all())
    assert len(by_put) == min(REBUILD, 1000) and (sql_events < REBUILD or by_sql == by_put)
    assert by_rows.applied == bare.applied == REBUILD and read == REBUILD
    assert result.applied == sql_events
    print(
        f"rebuild of {REBUILD:,} events (naive outbox read {REBUILD / naive:,.0f} rows/s):\n"
        f"  view.get/put, rows written per batch: {REBUILD / rowwise:,.0f} events/s, "
        f"ratio: {naive / rowwise:.3f}\n"
        f"  one UPDATE per event through view.session (the last {sql_events:,} events): "
        f"{REBUILD / rebuild:,.0f} events/s, "
        f"ratio: {naive / rebuild:.3f}\n"
        f"  a handler that writes nothing: {REBUILD / framework:,.0f} events/s, "
        f"ratio: {naive / framework:.3f}"
    )


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


async def main() -> None:
    await _steps(POSTGRES_URL)
    await _rebuild(POSTGRES_URL)
    floor = await _lateness(POSTGRES_URL, 0)
    loaded = await _lateness(POSTGRES_URL, PENDING)
    print(
        f"timer lateness ({DUE} due over 10 s): with {PENDING:,} pending p50 "
        f"{_pct(loaded, 0.5) * 1000:.0f} ms / p99 {_pct(loaded, 0.99) * 1000:.0f} ms; with none "
        f"pending p50 {_pct(floor, 0.5) * 1000:.0f} ms / p99 {_pct(floor, 0.99) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
