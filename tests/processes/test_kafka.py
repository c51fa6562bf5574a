"""A process manager fed by the Kafka bus: records carry the event but not its outbox position,
and a record the broker hands over twice (a relay resending after a lost ack, a consumer
rebalanced before its commit) makes no second transition and sends no command twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from dddframe import Application, Envelope
from dddframe.bus.kafka import KafkaBus
from dddframe.bus.kafka.records import to_record
from dddframe.outbox.records import row_to_envelope
from dddframe.outbox.tables import outbox_table
from dddframe.testing import reset_database
from tests.kafka import broker
from tests.kafka.kafka_app import kafka_bus
from tests.processes.model import Charge, Effect, Fulfilment, Place, Tick, fulfilment_module
from tests.services import database_url


async def _effects(app: Application) -> Counter[tuple[str, str]]:
    async with app.database.session() as s:
        rows = (await s.execute(select(Effect.what, Effect.order_id))).all()
    return Counter((what, order_id) for what, order_id in rows)


async def _instance(app: Application, key: str) -> Fulfilment | None:
    async with app.database.session() as s:
        return await s.get(Fulfilment, key)


async def _until(condition: Any, timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.05)


async def _outbox(app: Application, name: str) -> list[Envelope]:
    async with app.database.connect() as conn:
        rows = await conn.execute(
            select(outbox_table).where(outbox_table.c.name == name).order_by(outbox_table.c.id)
        )
        return [row_to_envelope(r._mapping) for r in rows]


async def _produce_again(app: Application, bootstrap: str, *envelopes: Envelope) -> None:
    """Put the records of ``envelopes`` on their topics once more, as a resending relay does."""
    bus = app.bus
    assert isinstance(bus, KafkaBus)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for env in envelopes:
            key, value, headers = to_record(env)
            topic = bus.naming.topic_of(env)
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def test_a_process_on_kafka_makes_one_transition_per_event_despite_duplicates(
    tmp_path: object,
) -> None:
    url = database_url("postgresql", tmp_path)
    bootstrap = broker.bootstrap()
    await reset_database(url)
    bus = kafka_bus(bootstrap, broker.unique("pm") + ".")
    async with Application([fulfilment_module()], url, bus=bus) as app:
        await app.create_schema()
        order = await app.engine.run(Place(order_id="k-1"))
        await app.engine.run(Tick(aggregate_id=order, n=1))
        await app.drain(timeout=60)
        await _until(lambda: _has(app, ("tick-1", "k-1")))
        (placed,), (ticked,) = await _outbox(app, "Pm:Placed"), await _outbox(app, "Pm:Ticked")
        # The broker hands both records over again, behind the first ones on their partition.
        await _produce_again(app, bootstrap, placed, ticked)
        await app.drain(timeout=60)
        pm = await _instance(app, "k-1")
        assert pm is not None and (pm.state, pm.ticks) == ("awaiting_payment", 1)
        assert not pm.completed

        await app.engine.run(Charge(aggregate_id=order))
        await app.drain(timeout=60)
        await _until(lambda: _has(app, ("ship", "k-1")))
        (charged,) = await _outbox(app, "Pm:Charged")
        await _produce_again(app, bootstrap, charged, ticked)  # after completion: ignored
        await app.drain(timeout=60)
        await asyncio.sleep(0.5)  # a command sent twice would be run by now
        pm = await _instance(app, "k-1")
        assert pm is not None and (pm.state, pm.ticks) == ("shipped", 1) and pm.completed
        assert pm.pending_timers == {}
        assert await _effects(app) == Counter(
            {("reserve", "k-1"): 1, ("tick-1", "k-1"): 1, ("ship", "k-1"): 1}
        )


async def _has(app: Application, effect: tuple[str, str]) -> bool:
    return effect in await _effects(app)
