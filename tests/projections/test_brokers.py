"""Projections delivered by RabbitMQ, whose messages carry the event but not its outbox position:
the position is looked up, so after a rebuild a redelivered, replayed event changes nothing."""

from __future__ import annotations

import uuid

from dddframe.bus.amqp import AmqpBus
from dddframe.bus.amqp.messages import from_message, to_message
from tests.projections.conftest import AppFactory
from tests.projections.model import (
    LINE,
    OrderTotals,
    ReferenceTotals,
    contents,
    outbox_envelopes,
    place,
    projection_module,
)
from tests.services import AMQP_URL, reachable, require


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
