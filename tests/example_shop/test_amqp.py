"""The same shop code on the AMQP bus, chosen by settings (``DDDFRAME_SHOP_BUS=amqp``), on the
local RabbitMQ with an exchange and queues private to the test."""

from __future__ import annotations

import uuid

import pytest

from example_shop.payment_stub import PaymentStub
from tests.example_shop.conftest import assert_the_order_flows, seeded_shop
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
        await assert_the_order_flows(shop, stub)
