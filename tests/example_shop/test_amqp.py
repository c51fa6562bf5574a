"""The same shop code on the AMQP bus, chosen by settings (``DDDFRAME_SHOP_BUS=amqp``), on the
local RabbitMQ with an exchange and queues private to the test."""

from __future__ import annotations

import uuid

import pytest

from example_shop.ordering import Line, Order, PlaceOrder
from example_shop.payment_stub import PaymentStub
from tests.example_shop.conftest import seeded_shop
from tests.services import AMQP_URL, reachable, require


async def test_the_shop_runs_on_amqp_by_settings(
    postgres_db: str, stub: PaymentStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    require("RabbitMQ", reachable(AMQP_URL, 5672), AMQP_URL)
    private = f"shop-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("DDDFRAME_AMQP_URL", AMQP_URL)
    monkeypatch.setenv("DDDFRAME_AMQP_EXCHANGE", private)
    monkeypatch.setenv("DDDFRAME_AMQP_QUEUE_PREFIX", private + ".")
    async with seeded_shop(postgres_db, stub, bus="amqp") as shop:
        assert shop.bus.name == "amqp" and shop.bus.exchange == private  # type: ignore[attr-defined]
        run = shop.engine.run
        shipped = await run(PlaceOrder(lines=[Line(sku="MUG", quantity=3)]))
        await shop.drain(timeout=60)  # the mugs are gone before the next order
        rejected = await run(PlaceOrder(lines=[Line(sku="MUG", quantity=1)]))
        declined = await run(PlaceOrder(lines=[Line(sku="LAMP", quantity=1)]))
        await shop.drain(timeout=60)
        async with shop.database.session() as s:
            orders = {i: await s.get(Order, i) for i in (shipped, rejected, declined)}
        assert await shop.dead_letters.list() == []
    status = {i: (o.status, o.cancel_reason) for i, o in orders.items() if o is not None}
    assert status[shipped] == ("shipped", None)
    assert status[rejected] == ("cancelled", "out of stock: MUG")
    assert status[declined][0] == "cancelled"
    assert len(stub.succeeded) == 1
