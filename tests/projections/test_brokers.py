"""Projections delivered by RabbitMQ and Kafka, whose messages carry the event but not its outbox
position: the position is looked up, so after a rebuild a redelivered, replayed event changes
nothing."""

from __future__ import annotations

import uuid

from dddframe import Application
from dddframe.bus.amqp import AmqpBus
from dddframe.bus.amqp.messages import from_message, to_message
from dddframe.bus.kafka.records import from_record, to_record
from tests.kafka import broker
from tests.kafka.kafka_app import kafka_bus
from tests.projections.conftest import AppFactory
from tests.projections.model import (
    LINE,
    OrderTotals,
    ReferenceTotals,
    contents,
    keep_placing,
    outbox_envelopes,
    place,
    projection_module,
)
from tests.services import AMQP_URL, reachable, require


async def assert_no_lag(app: Application) -> None:
    """The live applies raised each checkpoint to the head, although the bus delivered the
    events without their positions: the status reports no lag."""
    head = max(e.position or 0 for e in await outbox_envelopes(app))
    for status in await app.projections.status():
        assert (status.name, status.position, status.lag_events) == (status.name, head, 0)


async def test_amqp_delivers_projections_and_a_rebuild_matches(
    postgres_db: str, make_app: AppFactory
) -> None:
    require("RabbitMQ", reachable(AMQP_URL, 5672), AMQP_URL)
    exchange = f"t-{uuid.uuid4().hex[:8]}"
    bus = AmqpBus(AMQP_URL, exchange=exchange, queue_prefix=exchange + ".", poll_interval=0.05)
    async with make_app(postgres_db, [projection_module()], bus=bus) as app:
        for i in range(4):
            await place(app, f"o{i}", [i, 10])
        await app.drain(timeout=60)
        assert await contents(app, OrderTotals) == await contents(app, ReferenceTotals)
        result = await app.projections.rebuild(OrderTotals, batch_size=3)
        sub = next(s for s in app.subscriptions if s.listener == "OrderTotals")
        line = next(e for e in await outbox_envelopes(app) if e.name == LINE)
        assert line.position is not None and line.position <= result.built_through
        # As the AMQP consumer hands it over: decoded from the message, without a position.
        redelivered = from_message(to_message(line))
        assert redelivered.position is None
        await sub.deliver(redelivered, 2, sub)
        await place(app, "after", [5])
        await app.drain(timeout=60)
        assert await contents(app, OrderTotals) == await contents(app, ReferenceTotals)
        await assert_no_lag(app)


async def test_kafka_delivers_projections_and_a_rebuild_while_delivering_matches(
    postgres_db: str, make_app: AppFactory
) -> None:
    """The same on Kafka: records carry the envelope in headers but not its outbox position."""
    names = broker.unique("p") + "."
    bus = kafka_bus(broker.bootstrap(), names)
    async with make_app(postgres_db, [projection_module()], bus=bus) as app:
        for i in range(4):
            await place(app, f"o{i}", [i, 10])
        await app.drain(timeout=60)
        assert await contents(app, OrderTotals) == await contents(app, ReferenceTotals)
        async with keep_placing(lambda n: place(app, f"w{n:03}", [n]), pause=0.01) as written:
            result = await app.projections.rebuild(OrderTotals, batch_size=3)
        assert result.generation == 2 and written.placed > 0
        sub = next(s for s in app.subscriptions if s.listener == "OrderTotals")
        line = next(e for e in await outbox_envelopes(app) if e.name == LINE)
        assert line.position is not None and line.position <= result.built_through
        # As the Kafka consumer hands it over: decoded from the record, without a position.
        _key, value, headers = to_record(line)
        redelivered = from_record(headers, value)
        assert redelivered.position is None and redelivered.event_id == line.event_id
        await sub.deliver(redelivered, 2, sub)
        await place(app, "after", [5])
        await app.drain(timeout=60)
        assert await contents(app, OrderTotals) == await contents(app, ReferenceTotals)
        after = await contents(app, OrderTotals)
        assert ("after", 1, 5) in after[0]
        await assert_no_lag(app)
