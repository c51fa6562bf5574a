"""The shop's fulfilment process manager: an unpaid order is cancelled by its payment timer
(and its stock put back), a paid one completes the process with its timer cancelled."""

from __future__ import annotations

import asyncio

from dddframe.engine.schedules import command_name
from dddframe.processes.timers import ProcessTimeout
from example_shop.fulfilment import UNPAID, OrderFulfilment
from example_shop.ordering import Line, Order, PlaceOrder
from example_shop.payment_stub import PaymentStub
from example_shop.store import Stock
from tests.example_shop.conftest import seeded_shop


async def test_an_unpaid_order_is_cancelled_by_its_timer_and_a_late_charge_refunded(
    shop_db: str, stub: PaymentStub
) -> None:
    stub.down = True  # the provider does not answer: the payment never comes in time
    async with seeded_shop(shop_db, stub, payment_deadline=0.5) as shop:
        order_id = await shop.engine.run(PlaceOrder(lines=[Line(sku="MUG", quantity=2)]))
        async with asyncio.timeout(30):
            while True:
                async with shop.database.session() as s:
                    order = await s.get(Order, order_id)
                    stock = await s.get(Stock, "MUG")
                assert order is not None and stock is not None
                if order.status == "cancelled" and stock.on_hand == 3:
                    break
                await asyncio.sleep(0.05)
        assert order.cancel_reason == UNPAID
        async with shop.database.session() as s:
            process = await s.get(OrderFulfilment, str(order_id))
        assert process is not None and process.completed and process.state == "cancelled"
        stub.down = False  # the charge the listener kept retrying goes through: refunded
        await shop.drain(timeout=60)
        assert [c["status"] for c in stub.charges.values()] == ["refunded"]
        assert await shop.dead_letters.list() == []


async def test_a_paid_order_completes_its_process_and_cancels_the_timer(
    shop_db: str, stub: PaymentStub
) -> None:
    async with seeded_shop(shop_db, stub) as shop:
        order_id = await shop.engine.run(PlaceOrder(lines=[Line(sku="MUG", quantity=1)]))
        await shop.drain()
        async with shop.database.session() as s:
            process = await s.get(OrderFulfilment, str(order_id))
        assert process is not None and process.completed and process.state == "shipped"
        timers = [
            s
            for s in await shop.schedules.list(states=["cancelled", "pending", "done"])
            if s.command == command_name(ProcessTimeout)
        ]
        assert [t.state for t in timers] == ["cancelled"]
