"""The same shop code on the Kafka bus, chosen by settings (``DDDFRAME_SHOP_BUS=kafka``), on a
private test broker."""

from __future__ import annotations

import pytest

from example_shop.payment_stub import PaymentStub
from tests.example_shop.conftest import assert_the_order_flows, seeded_shop
from tests.kafka.broker import bootstrap, idempotence


@pytest.mark.kafka
async def test_the_shop_runs_on_kafka_by_settings(
    sqlite_db: str, stub: PaymentStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DDDFRAME_KAFKA_BOOTSTRAP", bootstrap("example_shop"))
    monkeypatch.setenv("DDDFRAME_KAFKA_IDEMPOTENCE", "1" if idempotence() else "0")
    async with seeded_shop(sqlite_db, stub, bus="kafka") as shop:
        assert shop.bus.name == "kafka"
        await assert_the_order_flows(shop, stub)
