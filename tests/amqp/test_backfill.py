"""A subscription added to a running AMQP system gets the events committed before its queue
existed, from the outbox, while new events keep flowing through the queue (issue 11, start
positions): nothing missed, nothing delivered twice, order per aggregate kept."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import select

from dddframe import Application
from dddframe.bus.amqp import AmqpBus
from dddframe.bus.amqp.backfill import MARK_PREFIX
from dddframe.outbox.sequencer import Sequencer
from dddframe.outbox.tables import positions_table
from dddframe.testing import reset_database
from dddframe.testing.contract.model import Increment, Probe, contract_modules, new_counters
from tests.services import AMQP_URL, reachable, require


@pytest.fixture
def amqp() -> str:
    require("RabbitMQ", reachable(AMQP_URL, 5672), AMQP_URL)
    return AMQP_URL


def _bus(exchange: str) -> AmqpBus:
    return AmqpBus(AMQP_URL, exchange=exchange, queue_prefix=exchange + ".", poll_interval=0.05)


async def _marks(app: Application) -> list[str]:
    async with app.database.connect() as conn:
        rows = await conn.scalars(
            select(positions_table.c.subscription).where(
                positions_table.c.subscription.like(MARK_PREFIX + "%")
            )
        )
        return list(rows)


async def test_a_new_subscription_gets_history_and_live_events_in_order(
    amqp: str, postgres_db: str
) -> None:
    await reset_database(postgres_db)
    exchange = f"bf-{uuid.uuid4().hex[:8]}"
    probe = Probe()
    async with Application(contract_modules(probe), postgres_db, bus=_bus(exchange)) as app:
        await app.create_schema()
        counters = await new_counters(app, 4)
        for cid in counters:
            await app.engine.run(Increment(counter_id=cid, times=30))
        await probe.wait_for(120)
        await app.drain()
        assert await _marks(app) == []  # the first start had no history to fill
    # Committed but not relayed yet: the next relay publishes these after the new queue is
    # bound, below the head its backfill reads; delivered once, by the backfill.
    writer = AmqpBus(AMQP_URL, exchange=exchange, queue_prefix=exchange + ".", relay=False)
    async with Application(contract_modules(probe), postgres_db, bus=writer, consume=False) as app:
        for cid in counters:
            await app.engine.run(Increment(counter_id=cid, times=5))
        async with app.database.connect() as conn:
            assert await Sequencer().sequence(conn) == 20  # numbered, below the next head

    # The auditor subscription is new: its queue did not exist while the 120 were relayed.
    async with Application(
        contract_modules(probe, auditor=True), postgres_db, bus=_bus(exchange)
    ) as app:
        for cid in counters:  # while the backfill runs, new events are relayed to its queue
            await app.engine.run(Increment(counter_id=cid, times=5))
        await probe.wait_for(160, listener="auditor", timeout=60)
        await app.drain()
        assert await _marks(app) == []  # done: retention is not held back any more
    for cid in counters:
        assert probe.versions(cid, "auditor") == list(range(2, 42)), cid  # once each, in order
        assert probe.versions(cid) == list(range(2, 42))


async def test_start_latest_on_a_new_queue_gets_no_history(amqp: str, postgres_db: str) -> None:
    await reset_database(postgres_db)
    exchange = f"bf-{uuid.uuid4().hex[:8]}"
    probe = Probe()
    async with Application(contract_modules(probe), postgres_db, bus=_bus(exchange)) as app:
        await app.create_schema()
        (cid,) = await new_counters(app)
        await app.engine.run(Increment(counter_id=cid, times=3))
        await probe.wait_for(3)
        await app.drain()
    modules = contract_modules(probe, auditor=True, auditor_start="latest")
    async with Application(modules, postgres_db, bus=_bus(exchange)) as app:
        assert await _marks(app) == []
        await app.drain()
        await app.engine.run(Increment(counter_id=cid))
        await probe.wait_for(1, listener="auditor")
        await app.drain()
        await asyncio.sleep(0.2)
    assert probe.versions(cid, "auditor") == [5]
