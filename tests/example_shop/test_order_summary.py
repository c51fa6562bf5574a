"""The shop's order summaries (a projection): served over HTTP, rebuilt by the CLI while orders
keep flowing, and the rebuilt table equals what the orders themselves say."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from typer.testing import CliRunner

from dddframe import Application
from dddframe.cli import app as cli
from example_shop.api import make_api
from example_shop.order_summary import OrderSummary, order_summaries
from example_shop.ordering import Line, Order, PlaceOrder
from example_shop.payment_stub import PaymentStub
from tests.example_shop.conftest import seeded_shop, shop_settings


async def _summaries(app: Application) -> list[tuple[str, str, str]]:
    async with app.projections.read(OrderSummary) as view:
        t = view.table(order_summaries)
        rows = (await view.session.execute(select(t.c.order_id, t.c.status, t.c.total))).all()
    return sorted((r[0], r[1], f"{r[2]:.2f}") for r in rows)


async def _orders(app: Application) -> list[tuple[str, str, str]]:
    async with app.database.session() as s:
        found = (await s.scalars(select(Order))).all()
    return sorted((str(o.id), o.status, f"{o.total:.2f}") for o in found)


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["projections", *args, "--app", "example_shop.app:make_app"])
    return result.exit_code, result.stdout, result.stderr


async def test_the_cli_rebuilds_order_summaries_while_orders_keep_flowing(
    shop_db: str, stub: PaymentStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DDDFRAME_SHOP_DATABASE_URL", shop_db)
    monkeypatch.setenv("DDDFRAME_SHOP_PAYMENT_URL", stub.url)
    async with seeded_shop(shop_db, stub) as shop:
        for sku in ("MUG", "LAMP", "MUG"):
            await shop.engine.run(PlaceOrder(lines=[Line(sku=sku, quantity=1)]))
        await shop.drain(timeout=60)
        assert await _summaries(shop) == await _orders(shop)
        rebuild = asyncio.create_task(
            asyncio.to_thread(_cli, "rebuild", "OrderSummary", "--batch-size", "4")
        )
        placed = 0
        while not rebuild.done() or placed < 3:
            await shop.engine.run(PlaceOrder(lines=[Line(sku="MUG", quantity=1)]))
            placed += 1
        code, out, err = await rebuild
        assert code == 0, err
        assert "OrderSummary: generation 2 is active" in out
        await shop.drain(timeout=60)
        assert await _summaries(shop) == await _orders(shop)
        code, out, _ = await asyncio.to_thread(_cli, "status", "--json")
        (status,) = json.loads(out)["projections"]
        assert (code, status["generation"], status["lag_events"]) == (0, 2, 0)
        code, _, err = await asyncio.to_thread(_cli, "rebuild", "OrderSumary")
        assert code == 2 and "Did you mean 'OrderSummary'" in err
        code, _, err = await asyncio.to_thread(_cli, "rebuild", "OrderSummary", "--abandon")
        assert code == 1 and "no interrupted rebuild to abandon" in err


@pytest.fixture
async def client(sqlite_db: str, stub: PaymentStub) -> AsyncIterator[httpx.AsyncClient]:
    api: FastAPI = make_api(shop_settings(sqlite_db, stub))
    async with api.router.lifespan_context(api):
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as c:
            yield c


async def test_order_summaries_over_http_and_bad_queries_are_4xx(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post("/products", json={"sku": "MUG", "name": "Mug", "price": "8.50"})
    assert r.status_code == 201, r.text
    r = await client.post("/orders", json={"lines": [{"sku": "MUG", "quantity": 2}]})
    order_id = r.json()["order_id"]
    app = client._transport.app.state.dddframe  # type: ignore[attr-defined]
    await app.drain(timeout=60)
    r = await client.get(f"/orders/{order_id}/summary")
    assert r.status_code == 200, r.text
    summary = r.json()
    assert (summary["status"], summary["total"], summary["items"]) == ("cancelled", "17.00", 2)
    r = await client.get("/order-summaries", params={"status": "cancelled", "limit": 10})
    assert [s["order_id"] for s in r.json()] == [order_id]
    assert (await client.get("/order-summaries", params={"status": "paid"})).json() == []
    for url, params in [
        ("/orders/not-a-uuid/summary", {}),
        ("/order-summaries", {"limit": "0"}),
        ("/order-summaries", {"limit": "1000"}),
        ("/order-summaries", {"status": "[red]bogus"}),
    ]:
        r = await client.get(url, params=params)
        assert r.status_code == 422, (url, params, r.text)
    r = await client.get("/orders/00000000-0000-0000-0000-000000000000/summary")
    assert r.status_code == 404 and "no summary" in r.text
