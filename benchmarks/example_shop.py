"""The example shop: orders carried place -> reserve -> pay -> ship per second (in-process bus,
payment stub over HTTP), and the FastAPI integration's overhead: PlaceOrder through
``POST /orders`` (httpx ASGI transport, correlation middleware, dependencies) against
``engine.run`` directly, listeners off so only the command path is timed.

Databases: a temporary SQLite file, and PostgreSQL from DDDFRAME_POSTGRES_URL when reachable.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from decimal import Decimal
from urllib.parse import urlsplit

import httpx

from dddframe.testing import reset_database
from example_shop.api import make_api
from example_shop.app import make_app
from example_shop.catalog import AddProduct
from example_shop.ordering import Line, PlaceOrder
from example_shop.payment_stub import PaymentStub
from example_shop.settings import ShopSettings
from example_shop.store import ReceiveStock

ORDERS = 200
API_ORDERS = 300


def _databases(tmp: str) -> list[tuple[str, str]]:
    found = [("sqlite", f"sqlite+aiosqlite:///{tmp}/bench.db")]
    url = os.environ.get("DDDFRAME_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1/test")
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 1):
            found.append(("postgresql", url))
    except OSError:
        print("postgresql: skipped (not reachable)")
    return found


def _settings(url: str, stub: PaymentStub) -> ShopSettings:
    return ShopSettings(
        database_url=url,
        payment_url=stub.url,
        create_schema=True,
        _env_file=None,  # type: ignore[call-arg]
    )


async def _end_to_end(url: str, stub: PaymentStub) -> float:
    await reset_database(url)
    async with make_app(settings=_settings(url, stub)) as app:
        await app.create_schema()
        await app.engine.run(AddProduct(sku="MUG", name="Mug", price=Decimal("2.00")))
        await app.engine.run(ReceiveStock(sku="MUG", quantity=ORDERS))
        started = time.perf_counter()
        for _ in range(ORDERS):
            await app.engine.run(PlaceOrder(lines=[Line(sku="MUG", quantity=1)]))
        await app.drain(timeout=600)
        return time.perf_counter() - started


async def _api_overhead(url: str, stub: PaymentStub) -> tuple[float, float]:
    await reset_database(url)
    api = make_api(_settings(url, stub), consume=False)
    order = {"lines": [{"sku": "MUG", "quantity": 1}]}
    async with api.router.lifespan_context(api):
        app = api.state.dddframe
        await app.engine.run(AddProduct(sku="MUG", name="Mug", price=Decimal("2.00")))
        started = time.perf_counter()
        for _ in range(API_ORDERS):
            await app.engine.run(PlaceOrder.model_validate(order))
        direct = time.perf_counter() - started
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            started = time.perf_counter()
            for _ in range(API_ORDERS):
                response = await client.post("/orders", json=order)
                response.raise_for_status()
            over_http = time.perf_counter() - started
    return direct, over_http


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, PaymentStub() as stub:
        for name, url in _databases(tmp):
            took = await _end_to_end(url, stub)
            print(
                f"{name}: end to end {ORDERS / took:.0f} orders/s shipped "
                f"({6 * ORDERS / took:.0f} events/s, {1000 * took / ORDERS:.1f} ms per order)"
            )
            direct, over_http = await _api_overhead(url, stub)
            print(
                f"{name}: PlaceOrder engine.run {1000 * direct / API_ORDERS:.2f} ms, "
                f"POST /orders {1000 * over_http / API_ORDERS:.2f} ms, "
                f"ratio: {over_http / direct:.2f}"
            )
