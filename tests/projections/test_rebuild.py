"""Blue/green rebuilds on SQLite, PostgreSQL and MariaDB: the rebuilt projection equals one built
live from the start while events kept coming; readers see the old generation or the new one,
never a mix or a half-built one; an interrupted rebuild resumes or is abandoned without touching
the live tables; removed history fails at once naming the range; retention keeps what
projections need."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import delete, inspect, update

from dddframe import Application
from dddframe.errors import HistoryMissing, InvalidArgument, RebuildStateError
from dddframe.outbox.retention import purge_delivered
from dddframe.outbox.tables import outbox_table, projections_table
from dddframe.projections import RebuildProgress
from dddframe.projections.store import ProjectionStore
from tests.projections.conftest import AppFactory
from tests.projections.model import (
    LINE,
    OrderTotals,
    ReferenceTotals,
    consistent_read,
    contents,
    grand,
    keep_placing,
    orders,
    outbox_envelopes,
    place,
    projection_module,
)


class Interrupt(Exception):
    pass


def interrupt_after(batches: int, seen: list[RebuildProgress]) -> object:
    def progress(p: RebuildProgress) -> None:
        seen.append(p)
        if len(seen) == batches:
            raise Interrupt

    return progress


async def _orders(app: Application, n: int, prefix: str = "o") -> None:
    for i in range(n):
        await place(app, f"{prefix}{i:03}", [i + 1, 2])


async def _tables(app: Application) -> set[str]:
    async with app.database.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_rebuild_while_orders_keep_coming_equals_a_live_build(
    any_db: str, make_app: AppFactory
) -> None:
    async with make_app(any_db, [projection_module()]) as app:
        await _orders(app, 10)
        await app.drain()
        async with app.database.engine.begin() as conn:  # a bug once lost a row of the live one
            await conn.execute(delete(orders).where(orders.c.order_id == "o000"))
        assert await contents(app, OrderTotals) != await contents(app, ReferenceTotals)
        seen: list[RebuildProgress] = []
        async with keep_placing(lambda n: place(app, f"w{n:03}", [n])) as written:
            result = await app.projections.rebuild(OrderTotals, batch_size=8, progress=seen.append)
            await _orders(app, 3, prefix="after")  # delivered live to the new generation
        await app.drain()
        assert (result.generation, result.previous) == (2, 1)
        assert len(seen) >= 3 and seen[-1].position == result.built_through
        assert written.placed > 0
        assert await contents(app, OrderTotals) == await contents(app, ReferenceTotals)
        # A late or repeated delivery of an event the new generation was built from (a lagging
        # consumer, a lost ack) changes nothing: it was replayed already.
        sub = next(s for s in app.subscriptions if s.listener == "OrderTotals")
        replayed = [e for e in await outbox_envelopes(app) if e.name == LINE]
        assert replayed[0].position is not None
        assert replayed[0].position <= result.built_through
        await sub.deliver(replayed[0], 2, sub)
        # Kafka and AMQP deliver the event without its outbox position: it is looked up.
        await sub.deliver(dataclasses.replace(replayed[1], position=None), 2, sub)
        assert await contents(app, OrderTotals) == await contents(app, ReferenceTotals)
        (status, _) = await app.projections.status()
        assert (status.name, status.generation, status.rebuild) == ("OrderTotals", 2, None)
        assert status.lag_events == 0
        # A second rebuild goes to generation 3 and retires generation 1's tables.
        again = await app.projections.rebuild("OrderTotals", batch_size=1000)
        assert again.generation == 3
        assert await contents(app, OrderTotals) == await contents(app, ReferenceTotals)
        tables = await _tables(app)
        assert {"proj_orders__g2", "proj_orders__g3"} <= tables and "proj_orders" not in tables


async def test_readers_see_the_old_generation_or_the_new_one_never_a_mix(
    any_db: str, make_app: AppFactory
) -> None:
    async with make_app(any_db, [projection_module(reference=False)]) as app:
        await _orders(app, 12)
        await app.drain()
        expected = sum(i + 1 + 2 for i in range(12))
        async with app.database.engine.begin() as conn:  # mark the old generation's tables
            await conn.execute(orders.insert().values(order_id="marker", lines=0, total=1000))
            await conn.execute(update(grand).values(total=grand.c.total + 1000))
        seen: set[tuple[int, int]] = set()
        done = asyncio.Event()

        async def read_until_done() -> None:
            while not done.is_set():
                async with app.projections.read(OrderTotals) as view:
                    total, in_grand = await consistent_read(view, OrderTotals)
                    await asyncio.sleep(0)
                    again, _ = await consistent_read(view, OrderTotals)
                    seen.add((view.generation, total))
                    assert total == in_grand == again, "a reader saw two generations"
                    assert total == (expected + 1000 if view.generation == 1 else expected)

        readers = [asyncio.create_task(read_until_done()) for _ in range(3)]
        await asyncio.sleep(0.05)
        await app.projections.rebuild(OrderTotals, batch_size=5)
        await asyncio.sleep(0.05)
        done.set()
        await asyncio.gather(*readers)
        assert (1, expected + 1000) in seen and (2, expected) in seen


async def test_interrupted_rebuild_resumes_without_touching_the_live_tables(
    any_db: str, make_app: AppFactory
) -> None:
    async with make_app(any_db, [projection_module()]) as app:
        await _orders(app, 10)
        await app.drain()
        before = await contents(app, OrderTotals)
        seen: list[RebuildProgress] = []
        with pytest.raises(Interrupt):
            await app.projections.rebuild(
                OrderTotals, batch_size=6, progress=interrupt_after(2, seen)
            )
        status = next(s for s in await app.projections.status() if s.name == "OrderTotals")
        assert status.generation == 1 and status.rebuild is not None
        assert (status.rebuild.generation, status.rebuild.state) == (2, "running")
        assert status.rebuild.position == seen[-1].position > 0
        assert await contents(app, OrderTotals) == before
        with pytest.raises(RebuildStateError, match="--resume"):
            await app.projections.rebuild(OrderTotals)
        await _orders(app, 4, prefix="during")
        await app.drain()
        assert await contents(app, OrderTotals) == await contents(app, ReferenceTotals)
        result = await app.projections.resume(OrderTotals, batch_size=6)
        assert result.generation == 2
        await app.drain()
        assert await contents(app, OrderTotals) == await contents(app, ReferenceTotals)
        with pytest.raises(RebuildStateError, match="no interrupted rebuild to resume"):
            await app.projections.resume(OrderTotals)


async def test_abandoned_rebuild_drops_its_tables_and_leaves_live_untouched(
    any_db: str, make_app: AppFactory
) -> None:
    async with make_app(any_db, [projection_module(reference=False)]) as app:
        await _orders(app, 6)
        await app.drain()
        before = await contents(app, OrderTotals)
        with pytest.raises(Interrupt):
            await app.projections.rebuild(
                OrderTotals, batch_size=4, progress=interrupt_after(1, [])
            )
        assert "proj_orders__g2" in await _tables(app)
        assert await app.projections.abandon(OrderTotals) == 2
        tables = await _tables(app)
        assert "proj_orders__g2" not in tables and "proj_orders" in tables
        assert await contents(app, OrderTotals) == before
        (status,) = await app.projections.status()
        assert (status.generation, status.rebuild) == (1, None)
        with pytest.raises(RebuildStateError, match="no interrupted rebuild to abandon"):
            await app.projections.abandon(OrderTotals)
        await place(app, "later", [3])  # live keeps applying to generation 1
        await app.drain()
        assert ("later", 1, 3) in (await contents(app, OrderTotals))[0]
        assert (await app.projections.rebuild(OrderTotals)).generation == 2


async def test_rebuild_fails_at_once_naming_the_history_retention_removed(
    any_db: str, make_app: AppFactory
) -> None:
    async with make_app(any_db, [projection_module(reference=False)]) as app:
        await _orders(app, 4)  # positions 1..12
        await app.drain()
        before = await contents(app, OrderTotals)
        # keep_history=True: retention keeps every row, even those every subscription passed.
        assert await purge_delivered(app.database, timedelta(0)) == 0
        async with app.database.engine.begin() as conn:
            await conn.execute(delete(outbox_table).where(outbox_table.c.position.between(4, 6)))
        with pytest.raises(HistoryMissing, match=r"positions 4\.\.6 .*--from 6"):
            await app.projections.rebuild(OrderTotals)
        with pytest.raises(InvalidArgument, match="past the outbox head"):
            await app.projections.rebuild(OrderTotals, from_position=99)
        (status,) = await app.projections.status()
        assert (status.generation, status.rebuild) == (1, None)
        assert "proj_orders__g2" in await _tables(app)  # made, then left empty for the next try
        assert await contents(app, OrderTotals) == before
        # A projection that does not keep its history lets retention remove it all.
        async with app.database.engine.begin() as conn:
            await conn.execute(update(projections_table).values(keep_after=None))
        assert await purge_delivered(app.database, timedelta(0)) == 9
        with pytest.raises(HistoryMissing, match=r"positions 1\.\.12 "):
            await app.projections.rebuild(OrderTotals)
        assert (await app.projections.rebuild(OrderTotals, from_position=12)).generation == 2


async def test_an_event_delivered_during_the_switch_reaches_the_new_generation(
    server_db: str, make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The switch holds the projection's row exclusively from reading the head to its commit:
    an event sequenced after that head, delivered meanwhile, waits for it and then goes to the
    new generation (read without the lock, it would go to the old one and be lost to the new).
    SQLite has one writer, so the same holds there by construction."""
    release = asyncio.Event()
    paused = asyncio.Event()
    original = ProjectionStore.switch

    async def slow_switch(self: ProjectionStore, session: object, name: str, gen: int) -> None:
        paused.set()
        await release.wait()
        await original(self, session, name, gen)  # type: ignore[arg-type]

    monkeypatch.setattr(ProjectionStore, "switch", slow_switch)
    async with make_app(server_db, [projection_module()]) as app:
        await _orders(app, 3)
        await app.drain()
        rebuild = asyncio.create_task(app.projections.rebuild(OrderTotals))
        await paused.wait()
        head = len(await outbox_envelopes(app))
        await place(app, "late", [])  # sequenced after the head the switch caught up to
        while len(await outbox_envelopes(app)) < head + 1:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # let its delivery reach the projection's row
        release.set()
        result = await rebuild
        await app.drain()
        assert result.built_through < max(e.position or 0 for e in await outbox_envelopes(app))
        assert await contents(app, OrderTotals) == await contents(app, ReferenceTotals)


async def test_retention_keeps_what_a_running_rebuild_has_not_replayed(
    any_db: str, make_app: AppFactory
) -> None:
    async with make_app(any_db, [projection_module(reference=False)]) as app:
        await _orders(app, 4)  # positions 1..12, delivered
        await app.drain()
        before = await contents(app, OrderTotals)
        async with app.database.engine.begin() as conn:  # a projection with keep_history=False
            await conn.execute(update(projections_table).values(keep_after=None))
        seen: list[RebuildProgress] = []
        with pytest.raises(Interrupt):
            await app.projections.rebuild(
                OrderTotals, batch_size=5, progress=interrupt_after(1, seen)
            )
        assert seen[-1].position == 5
        assert await purge_delivered(app.database, timedelta(0)) == 5  # 1..5 only
        assert (await app.projections.resume(OrderTotals, batch_size=5)).generation == 2
        # Positions 1..5 were replayed before retention removed them; the rest were kept.
        assert await contents(app, OrderTotals) == before
