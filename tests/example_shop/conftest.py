from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest

from dddframe import Application
from dddframe.testing import reset_database
from example_shop.app import make_app
from example_shop.catalog import AddProduct
from example_shop.ordering import Line, Order, PlaceOrder
from example_shop.payment_stub import PaymentStub
from example_shop.settings import ShopSettings
from example_shop.store import ReceiveStock
from tests.services import database_url


@pytest.fixture(params=["sqlite", "postgresql"])
def shop_db(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """SQLite and PostgreSQL in turn (the issue's end-to-end databases)."""
    return database_url(request.param, tmp_path)


@pytest.fixture
def stub() -> Iterator[PaymentStub]:
    with PaymentStub(decline_over=Decimal(1000)) as provider:
        yield provider


def shop_settings(url: str, stub: PaymentStub, **overrides: Any) -> ShopSettings:
    values: dict[str, Any] = {
        "database_url": url,
        "bus": "inprocess",
        "payment_url": stub.url,
        "payment_retry_base": 0.05,
        "payment_retry_limit": 20,
        "_env_file": None,
    }
    values.update(overrides)
    return ShopSettings(**values)


@asynccontextmanager
async def seeded_shop(url: str, stub: PaymentStub, **overrides: Any) -> AsyncIterator[Application]:
    """A started shop on an emptied database with MUG (8.50, 3 in stock) and LAMP (1250.00,
    2 in stock)."""
    await reset_database(url)
    async with make_app(settings=shop_settings(url, stub, **overrides)) as app:
        await app.create_schema()
        await app.engine.run(AddProduct(sku="MUG", name="Mug", price=Decimal("8.50")))
        await app.engine.run(AddProduct(sku="LAMP", name="Lamp", price=Decimal("1250.00")))
        await app.engine.run(ReceiveStock(sku="MUG", quantity=3))
        await app.engine.run(ReceiveStock(sku="LAMP", quantity=2))
        yield app


@pytest.fixture
async def shop(shop_db: str, stub: PaymentStub) -> AsyncIterator[Application]:
    async with seeded_shop(shop_db, stub) as app:
        yield app


async def assert_the_order_flows(shop: Application, stub: PaymentStub) -> None:
    """One order ships, one is rejected for stock, one is declined by the provider; nothing
    dead-lettered. The same check runs on every broker the shop can be configured with."""
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
