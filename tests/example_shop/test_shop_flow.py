"""The example shop end to end: place -> reserve -> pay -> ship, and the failure paths."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from dddframe import Application
from dddframe.errors import NotFound
from dddframe.outbox.tables import OUTBOX_STATUS_PREPARED, outbox_table
from example_shop.catalog import AddProduct, InvalidPrice, Product
from example_shop.ordering import (
    CancelOrder,
    Line,
    Order,
    OrderError,
    OrderStateError,
    PlaceOrder,
)
from example_shop.payment import Payment, PaymentUnavailable
from example_shop.payment_stub import PaymentStub
from example_shop.shipping import Parcel
from example_shop.store import Reservation, Stock
from tests.example_shop.conftest import seeded_shop

ROOT = Path(__file__).resolve().parents[2]


async def order_of(app: Application, order_id: uuid.UUID) -> Order:
    async with app.database.session() as s:
        order = await s.get(Order, order_id)
        assert order is not None
        return order


async def on_hand(app: Application, sku: str) -> int:
    async with app.database.session() as s:
        stock = await s.get(Stock, sku)
        assert stock is not None
        return stock.on_hand


async def chain(app: Application, order_id: uuid.UUID) -> list[tuple[str, str | None]]:
    """(event name, aggregate type) of every outbox row about ``order_id``, in commit order."""
    async with app.database.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    outbox_table.c.name, outbox_table.c.aggregate_type, outbox_table.c.payload
                ).order_by(outbox_table.c.position)
            )
        ).all()
    return [
        (name, agg)
        for name, agg, payload in rows
        if json.loads(payload).get("order_id") == str(order_id)
    ]


async def test_order_is_reserved_paid_and_shipped(shop: Application, stub: PaymentStub) -> None:
    order_id = await shop.engine.run(PlaceOrder(lines=[Line(sku="MUG", quantity=2)]))
    await shop.drain()
    order = await order_of(shop, order_id)
    assert order.status == "shipped"
    assert order.tracking and order.tracking.startswith("TRK-")
    assert await on_hand(shop, "MUG") == 1
    assert [(c["reference"], c["amount"]) for c in stub.succeeded] == [(str(order_id), "17.00")]
    async with shop.database.session() as s:
        payment = await s.get(Payment, order_id)
        parcel = await s.get(Parcel, order_id)
    assert payment is not None and payment.status == "charged" and payment.amount == Decimal("17")
    assert parcel is not None and parcel.items == 2 and parcel.tracking == order.tracking
    assert [name for name, _ in await chain(shop, order_id)] == [
        "Order:Placed",
        "Store:StockReserved",
        "Payment:Charged",
        "Order:Paid",
        "Shipping:Shipped",
        "Order:Shipped",
    ]
    assert await shop.dead_letters.list() == []


async def test_out_of_stock_order_is_rejected_and_cancelled(any_db: str, stub: PaymentStub) -> None:
    async with seeded_shop(any_db, stub) as shop:
        a = await shop.engine.run(PlaceOrder(lines=[Line(sku="MUG", quantity=2)]))
        b = await shop.engine.run(PlaceOrder(lines=[Line(sku="MUG", quantity=2)]))
        await shop.drain()
        # The store serves different orders in parallel: either may get the stock.
        orders = {(await order_of(shop, i)).status: i for i in (a, b)}
        assert set(orders) == {"shipped", "cancelled"}
        winner, loser = orders["shipped"], orders["cancelled"]
        assert (await order_of(shop, loser)).cancel_reason == "out of stock: MUG"
        assert await on_hand(shop, "MUG") == 1
        assert [name for name, _ in await chain(shop, loser)] == [
            "Order:Placed",
            "Order:Rejected",
            "Order:Cancelled",
        ]
        assert [c["reference"] for c in stub.charges.values()] == [str(winner)]
        assert await shop.dead_letters.list() == []


async def test_declined_payment_cancels_the_order_and_releases_its_stock(
    shop: Application, stub: PaymentStub
) -> None:
    order_id = await shop.engine.run(PlaceOrder(lines=[Line(sku="LAMP", quantity=1)]))
    await shop.drain()
    order = await order_of(shop, order_id)
    assert order.status == "cancelled"
    assert order.cancel_reason == "payment declined: amount 1250.00 is over the card limit"
    assert await on_hand(shop, "LAMP") == 2  # reserved, then released
    async with shop.database.session() as s:
        payment = await s.get(Payment, order_id)
        reservation = await s.get(Reservation, order_id)
    assert payment is not None and payment.status == "declined"
    assert reservation is not None and reservation.status == "released"
    assert stub.succeeded == []
    assert [name for name, _ in await chain(shop, order_id)] == [
        "Order:Placed",
        "Store:StockReserved",
        "Payment:Declined",
        "Order:Cancelled",
        "Store:StockReleased",
    ]


async def test_provider_down_then_up_is_carried_through_by_the_retry_policy(
    shop: Application, stub: PaymentStub
) -> None:
    stub.down = True
    order_id = await shop.engine.run(PlaceOrder(lines=[Line(sku="MUG", quantity=1)]))
    for _ in range(500):
        if stub.requests >= 3:
            break
        await asyncio.sleep(0.01)
    assert stub.requests >= 3, "the charge was not retried while the provider was down"
    assert (await order_of(shop, order_id)).status == "placed"
    assert stub.charges == {}
    stub.down = False
    await shop.drain()
    assert (await order_of(shop, order_id)).status == "shipped"
    assert len(stub.succeeded) == 1
    assert await shop.dead_letters.list() == []


async def test_cancellation_releases_stock_and_a_late_charge_is_refunded(
    shop: Application, stub: PaymentStub
) -> None:
    stub.down = True  # the charge waits for the provider while the customer cancels
    order_id = await shop.engine.run(PlaceOrder(lines=[Line(sku="MUG", quantity=3)]))
    for _ in range(500):
        if stub.requests >= 1:
            break
        await asyncio.sleep(0.01)
    assert await on_hand(shop, "MUG") == 0
    await shop.engine.run(CancelOrder(order_id=order_id, reason="changed my mind"))
    stub.down = False
    await shop.drain()
    order = await order_of(shop, order_id)
    assert order.status == "cancelled" and order.cancel_reason == "changed my mind"
    assert await on_hand(shop, "MUG") == 3
    assert [c["status"] for c in stub.charges.values()] == ["refunded"]
    async with shop.database.session() as s:
        payment = await s.get(Payment, order_id)
    assert payment is not None and payment.status == "refunded"
    names = [name for name, _ in await chain(shop, order_id)]
    # Causes come before their effects; unrelated reactions run in parallel.
    for cause, effect in [
        ("Order:Cancelled", "Store:StockReleased"),
        ("Order:Cancelled", "Order:RefundDue"),
        ("Payment:Charged", "Order:RefundDue"),
        ("Order:RefundDue", "Payment:Refunded"),
    ]:
        assert names.index(cause) < names.index(effect), names
    assert "Order:Paid" not in names
    assert await shop.dead_letters.list() == []


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_database_bus_charges_through_a_half_message(
    kind: str, stub: PaymentStub, tmp_path: Path
) -> None:
    from tests.services import database_url

    url = database_url(kind, tmp_path)
    async with seeded_shop(url, stub, bus="database") as shop:
        assert shop.bus.name == "database"
        order_id = await shop.engine.run(PlaceOrder(lines=[Line(sku="MUG", quantity=1)]))
        declined = await shop.engine.run(PlaceOrder(lines=[Line(sku="LAMP", quantity=1)]))
        await shop.drain()
        assert (await order_of(shop, order_id)).status == "shipped"
        assert (await order_of(shop, declined)).status == "cancelled"
        events = await chain(shop, order_id)
        # The charge was announced by the committed half message (a direct message keyed by
        # the order), not by the Payment aggregate.
        assert ("Payment:Charged", "message") in events
        assert not any(agg == "Payment" for _, agg in events)
        assert "Payment:Charged" not in [n for n, _ in await chain(shop, declined)]
        async with shop.database.connect() as conn:
            prepared = await conn.scalar(
                select(outbox_table.c.id).where(outbox_table.c.status == OUTBOX_STATUS_PREPARED)
            )
        assert prepared is None
        async with shop.database.session() as s:
            payment = await s.get(Payment, order_id)
        assert payment is not None and payment.status == "charged"
        assert await shop.dead_letters.list() == []


async def test_invariants_raise_domain_errors(sqlite_db: str, stub: PaymentStub) -> None:
    async with seeded_shop(sqlite_db, stub) as shop:
        with pytest.raises(ValidationError, match="greater than 0"):
            AddProduct(sku="X", name="X", price=Decimal(0))
        with pytest.raises(InvalidPrice, match="price must be positive"):
            Product.add("X", "X", Decimal(0))  # the aggregate holds its invariant too
        with pytest.raises(NotFound, match="No product with SKU 'NOPE'"):
            await shop.engine.run(PlaceOrder(lines=[Line(sku="NOPE", quantity=1)]))
        with pytest.raises(ValidationError, match="greater than or equal to 1"):
            Line(sku="MUG", quantity=0)  # the command cannot even be built
        with pytest.raises(OrderError, match="at least one line"):
            await shop.engine.run(PlaceOrder(lines=[]))
        with pytest.raises(OrderError, match="one line only"):
            await shop.engine.run(
                PlaceOrder(lines=[Line(sku="MUG", quantity=1), Line(sku="MUG", quantity=1)])
            )
        order_id = await shop.engine.run(PlaceOrder(lines=[Line(sku="MUG", quantity=1)]))
        await shop.drain()
        with pytest.raises(OrderStateError, match="is shipped and can no longer be cancelled"):
            await shop.engine.run(CancelOrder(order_id=order_id, reason="too late"))


def test_demo_runs_and_tells_what_happened() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "example_shop.demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "Order:Placed -> Store:StockReserved -> Payment:Charged -> Order:Paid" in out
    assert "Shipping:Shipped -> Order:Shipped" in out
    assert "out of stock: TEE" in out
    assert "Order:Placed -> Order:Rejected -> Order:Cancelled" in out
    assert "charges taken by the provider: 1" in out
    assert "ok:" in out


async def test_the_tx_checker_bound_by_name_asks_the_provider(
    sqlite_db: str, stub: PaymentStub
) -> None:
    """A ``Payment:Charged`` half message left prepared by a crash is committed only if the
    provider did take the money."""
    from dddframe.domain.envelope import Envelope
    from example_shop.events import PaymentCharged

    async with seeded_shop(sqlite_db, stub, bus="database") as shop:
        check = shop.tx_checkers["Payment:Charged"]
        charged, never = uuid.uuid4(), uuid.uuid4()
        stub.charge({"reference": str(charged), "amount": "8.50"})

        def envelope(order_id: uuid.UUID) -> Envelope:
            event = PaymentCharged(order_id=order_id, amount=Decimal("8.50"))
            return shop.engine.message(event, key=str(order_id))

        assert await check(envelope(charged)) is True
        assert await check(envelope(never)) is False
        stub.down = True  # unknown: the checker fails and the bus asks again later
        with pytest.raises(PaymentUnavailable, match="503"):
            await check(envelope(charged))
