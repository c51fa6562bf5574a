"""A process manager fed by the Kafka bus: records carry the event but not its outbox position,
and a record the broker hands over twice (a relay resending after a lost ack, a consumer
rebalanced before its commit) makes no second transition and sends no command twice."""

from __future__ import annotations

import asyncio
from collections import Counter

from aiokafka import AIOKafkaProducer

from dddframe import Application, Envelope
from dddframe.bus.kafka import KafkaBus
from dddframe.bus.kafka.records import to_record
from dddframe.testing import reset_database
from tests.kafka import broker
from tests.kafka.kafka_app import kafka_bus
from tests.processes.model import Charge, Place, Tick, fulfilment_module
from tests.processes.reading import (
    has_effect,
    read_effects,
    read_instance,
    read_outbox,
    wait_until,
)
from tests.services import database_url


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
        await wait_until(lambda: has_effect(app, ("tick-1", "k-1")), timeout=60)
        (placed,), (ticked,) = (
            await read_outbox(app, "Pm:Placed"),
            await read_outbox(app, "Pm:Ticked"),
        )
        # The broker hands both records over again, behind the first ones on their partition.
        await _produce_again(app, bootstrap, placed, ticked)
        await app.drain(timeout=60)
        pm = await read_instance(app, "k-1")
        assert pm is not None and (pm.state, pm.ticks) == ("awaiting_payment", 1)
        assert not pm.completed

        await app.engine.run(Charge(aggregate_id=order))
        await app.drain(timeout=60)
        await wait_until(lambda: has_effect(app, ("ship", "k-1")), timeout=60)
        (charged,) = await read_outbox(app, "Pm:Charged")
        await _produce_again(app, bootstrap, charged, ticked)  # after completion: ignored
        await app.drain(timeout=60)
        await asyncio.sleep(0.5)  # a command sent twice would be run by now
        pm = await read_instance(app, "k-1")
        assert pm is not None and (pm.state, pm.ticks) == ("shipped", 1) and pm.completed
        assert pm.pending_timers == {}
        assert await read_effects(app) == Counter(
            {("reserve", "k-1"): 1, ("tick-1", "k-1"): 1, ("ship", "k-1"): 1}
        )
