"""``make demo``: the shop end to end on a fresh SQLite database, narrated.

It starts a payment provider stub in this process, seeds a catalog, places three orders (one goes
place -> reserve -> pay -> ship, one is rejected out of stock, one has its payment declined and
its stock released), waits for every event to be delivered and prints what happened.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import uuid
from dataclasses import dataclass
from decimal import Decimal

from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from dddframe import Application
from dddframe.outbox.tables import outbox_table
from example_shop.app import make_app
from example_shop.catalog import AddProduct
from example_shop.ordering import Line, Order, PlaceOrder
from example_shop.payment_stub import PaymentStub
from example_shop.settings import ShopSettings
from example_shop.store import ReceiveStock, Stock

console = Console()


@dataclass(frozen=True)
class Outcome:
    orders: dict[uuid.UUID, Order]
    stock: dict[str, int]
    events: list[tuple[int, str, str, str]]  # position, name, aggregate type, order id


async def run_shop(app: Application) -> tuple[dict[str, uuid.UUID], Outcome]:
    run = app.engine.run
    await app.create_schema()
    for sku, name, price, qty in (
        ("MUG", "Mug", "8.50", 10),
        ("TEE", "T-shirt", "19.00", 1),
        ("LAMP", "Designer lamp", "1250.00", 2),
    ):
        await run(AddProduct(sku=sku, name=name, price=Decimal(price)))
        await run(ReceiveStock(sku=sku, quantity=qty))
    console.print("catalog: MUG 8.50 (10 in stock), TEE 19.00 (1), LAMP 1250.00 (2)")
    console.print("payment provider: declines any charge over 1000.00\n")
    placed = {
        "2 x MUG": await run(PlaceOrder(lines=[Line(sku="MUG", quantity=2)])),
        "3 x TEE": await run(PlaceOrder(lines=[Line(sku="TEE", quantity=3)])),
        "1 x LAMP": await run(PlaceOrder(lines=[Line(sku="LAMP", quantity=1)])),
    }
    for what, order_id in placed.items():
        console.print(f"placed order [cyan]{str(order_id)[-12:]}[/]: {what}")
    await app.drain()
    console.print("listeners drained: every event delivered\n")
    async with app.database.session() as s:
        orders = {o.id: o for o in (await s.scalars(select(Order))).all()}
        stock = {x.id: x.on_hand for x in (await s.scalars(select(Stock))).all()}
    async with app.database.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    outbox_table.c.position,
                    outbox_table.c.name,
                    outbox_table.c.aggregate_type,
                    outbox_table.c.payload,
                ).order_by(outbox_table.c.position)
            )
        ).all()
    events = [
        (int(pos), name, agg or "", str(json.loads(payload).get("order_id", "")))
        for pos, name, agg, payload in rows
    ]
    return placed, Outcome(orders, stock, events)


def report(placed: dict[str, uuid.UUID], out: Outcome, charges: int) -> None:
    table = Table("order", "lines", "status", "reason / tracking", title="Orders")
    for what, order_id in placed.items():
        order = out.orders[order_id]
        table.add_row(
            str(order_id)[-12:], what, order.status, order.cancel_reason or order.tracking or ""
        )
    console.print(table)
    for what, order_id in placed.items():
        chain = [name for _, name, _, oid in out.events if oid == str(order_id)]
        console.print(f"[bold]{what}[/]: " + " -> ".join(chain))
    stock = ", ".join(f"{sku} {n}" for sku, n in sorted(out.stock.items()))
    console.print(f"\nstock left: {stock}; charges taken by the provider: {charges}\n")
    log = Table("position", "event", "recorded by", "order", title="Outbox, in commit order")
    for position, name, agg_type, ref in out.events:
        log.add_row(str(position), name, agg_type, ref[-12:])
    console.print(log)


async def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="example-shop-") as tmp, PaymentStub() as stub:
        settings = ShopSettings(
            database_url=f"sqlite+aiosqlite:///{tmp}/shop.db",
            bus="inprocess",
            payment_url=stub.url,
            _env_file=None,  # the demo ignores local settings files
        )
        console.rule("[bold]dddframe example shop[/] (SQLite, in-process bus)")
        async with make_app(settings=settings) as app:
            placed, out = await run_shop(app)
        report(placed, out, len(stub.succeeded))
    statuses = [out.orders[i].status for i in placed.values()]
    if statuses != ["shipped", "cancelled", "cancelled"]:
        raise SystemExit(f"unexpected order statuses {statuses}")
    console.print(
        "[green]ok[/]: the mug order was reserved, paid and shipped; the T-shirt order was "
        "rejected out of stock and cancelled through Order:Rejected; the lamp's payment was "
        "declined, so the order was cancelled and its stock released."
    )


if __name__ == "__main__":
    asyncio.run(main())
