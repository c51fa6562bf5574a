"""The shop split in two processes on the database bus: this process runs commands only
(``make_app(consume=False)``, like the API next to workers) and ``dddframe worker --app
example_shop.app:app`` delivers every event."""

from __future__ import annotations

import asyncio
import os
import sys
from decimal import Decimal
from pathlib import Path

from dddframe.testing import reset_database
from example_shop.app import make_app
from example_shop.catalog import AddProduct
from example_shop.ordering import Line, Order, PlaceOrder
from example_shop.payment_stub import PaymentStub
from example_shop.store import ReceiveStock
from tests.example_shop.conftest import shop_settings

ROOT = Path(__file__).resolve().parents[2]


async def test_a_worker_process_carries_orders_placed_elsewhere(
    shop_db: str, stub: PaymentStub, tmp_path: Path
) -> None:
    await reset_database(shop_db)
    settings = shop_settings(shop_db, stub, bus="database")
    async with make_app(consume=False, settings=settings) as app:
        await app.create_schema()
        await app.engine.run(AddProduct(sku="MUG", name="Mug", price=Decimal("3.00")))
        await app.engine.run(ReceiveStock(sku="MUG", quantity=1))
        env = {
            **os.environ,
            "DDDFRAME_SHOP_DATABASE_URL": shop_db,
            "DDDFRAME_SHOP_BUS": "database",
            "DDDFRAME_SHOP_PAYMENT_URL": stub.url,
            "DDDFRAME_SHOP_SETTINGS_FILE": str(tmp_path / "none.env"),
        }
        worker = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "dddframe.cli", "worker", "--app", "example_shop.app:app"),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            a = await app.engine.run(PlaceOrder(lines=[Line(sku="MUG", quantity=1)]))
            b = await app.engine.run(PlaceOrder(lines=[Line(sku="MUG", quantity=1)]))
            await app.drain(timeout=60)
            async with app.database.session() as s:
                first = await s.get(Order, a)
                second = await s.get(Order, b)
            assert worker.returncode is None
        finally:
            worker.terminate()
            async with asyncio.timeout(30):
                raw, _ = await worker.communicate()
    output = raw.decode()
    assert first is not None and second is not None
    # Two orders for the last mug: the store serves them in parallel; exactly one gets it.
    outcomes = sorted((o.status, o.cancel_reason) for o in (first, second))
    assert outcomes == [("cancelled", "out of stock: MUG"), ("shipped", None)], output
    assert len(stub.succeeded) == 1
    assert "worker running: bus=database" in output
