"""The same shop code on the Kafka bus, chosen by settings (``DDDFRAME_SHOP_BUS=kafka``), on a
private test broker."""

from __future__ import annotations

import pytest

from example_shop.ordering import Line, Order, PlaceOrder
from example_shop.payment_stub import PaymentStub
from tests.example_shop.conftest import seeded_shop
from tests.kafka.broker import bootstrap, idempotence


@pytest.mark.kafka
async def test_the_shop_runs_on_kafka_by_settings(
    sqlite_db: str, stub: PaymentStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DDDFRAME_KAFKA_BOOTSTRAP", bootstrap("example_shop"))
    monkeypatch.setenv("DDDFRAME_KAFKA_IDEMPOTENCE", "1" if idempotence() else "0")
    async with seeded_shop(sqlite_db, stub, bus="kafka") as shop:
        assert shop.bus.name == "kafka"
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
