"""Start positions after retention: valid only if every event after the position is stored,
even when retention kept an older row (a dead letter) below the removed range."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from dddframe import Application, LimitRetry
from dddframe.bus.database import DatabaseBus
from dddframe.errors import PositionExpired
from dddframe.outbox.reader import OutboxReader, PositionStore
from dddframe.outbox.tables import parked_table
from dddframe.testing import reset_database
from tests.contract.model import CreateCounter, Increment, Probe, contract_modules


async def test_a_kept_dead_letter_does_not_make_a_removed_range_valid(any_db: str) -> None:
    await reset_database(any_db)
    probe = Probe()
    bus = DatabaseBus(
        run_interval=0.05, retention=timedelta(0), retry=LimitRetry(limit=1, delay=0.01)
    )
    async with Application(contract_modules(probe), any_db, bus=bus) as app:
        await app.create_schema()
        good = await app.engine.run(CreateCounter())
        await app.engine.run(Increment(counter_id=good, times=3))
        bad = await app.engine.run(CreateCounter())
        await app.drain()
        probe.always_fail.add(str(bad))
        await app.engine.run(Increment(counter_id=bad, times=1))  # a dead letter, kept
        await app.engine.run(Increment(counter_id=good, times=5))
        await app.drain()
        assert len(await app.dead_letters.list()) == 1
        removed, _ = await bus.purge()
        async with app.database.connect() as conn:
            kept = int(await conn.scalar(select(parked_table.c.position)) or 0)
            head = await OutboxReader().head(conn)
            assert removed == head - 1 and 0 < kept < head
            # Positions kept+1 .. head are gone: starting after `kept` would skip them all.
            with pytest.raises(PositionExpired) as caught:
                await PositionStore().load(conn, "late.after_dead_letter", start=kept)
            message = str(caught.value)
            assert f"removed positions {kept + 1} to {head}" in message
            assert f"Start after a position >= {head}" in message
            with pytest.raises(PositionExpired, match=f"removed positions 1 to {head} "):
                await PositionStore().load(conn, "late.from_start", start=0)
            # Where every later event is still there, the start is fine.
            assert await PositionStore().load(conn, "late.at_head", start=head) == head
            await conn.commit()
        await app.engine.run(Increment(counter_id=good, times=2))
        await app.drain()
        async with app.database.connect() as conn:
            assert await PositionStore().load(conn, "late.new", start=head) == head
            with pytest.raises(PositionExpired, match=f"position {head}"):
                await PositionStore().load(conn, "late.one_short", start=head - 1)
