"""The shop's HTTP API and the FastAPI integration, driven with httpx against the ASGI app."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from dddframe import Application, Command, Module
from dddframe.errors import ConcurrencyConflict
from dddframe.integrations.fastapi import EngineDep, get_application, install, lifespan
from dddframe.outbox.tables import outbox_table
from example_shop.api import make_api
from example_shop.payment_stub import PaymentStub
from tests.example_shop.conftest import shop_settings

ROOT = Path(__file__).resolve().parents[2]
PROBLEM = "application/problem+json"


@pytest.fixture
async def api(sqlite_db: str, stub: PaymentStub) -> AsyncIterator[FastAPI]:
    app = make_api(shop_settings(sqlite_db, stub))
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(api: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as c:
        yield c


def application(api: FastAPI) -> Application:
    app = api.state.dddframe
    assert isinstance(app, Application)
    return app


async def seed(client: httpx.AsyncClient) -> None:
    r = await client.post("/products", json={"sku": "MUG", "name": "Mug", "price": "8.50"})
    assert r.status_code == 201, r.text
    r = await client.post("/products/MUG/stock", json={"quantity": 5})
    assert r.json() == {"sku": "MUG", "on_hand": 5}


async def headers_of(app: Application, order_id: str) -> list[tuple[str, dict[str, str]]]:
    async with app.database.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    outbox_table.c.name, outbox_table.c.payload, outbox_table.c.headers
                ).order_by(outbox_table.c.position)
            )
        ).all()
    out = []
    for name, payload, headers in rows:
        if json.loads(payload).get("order_id") == order_id:
            out.append((name, headers if isinstance(headers, dict) else json.loads(headers)))
    return out


async def test_an_order_placed_over_http_ships_with_the_request_correlation_id(
    api: FastAPI, client: httpx.AsyncClient
) -> None:
    await seed(client)
    r = await client.post(
        "/orders",
        json={"lines": [{"sku": "MUG", "quantity": 2}]},
        headers={"X-Correlation-ID": "checkout-42"},
    )
    assert r.status_code == 201, r.text
    assert r.headers["X-Correlation-ID"] == "checkout-42"
    order_id = r.json()["order_id"]
    await application(api).drain()
    r = await client.get(f"/orders/{order_id}")
    body = r.json()
    assert body["status"] == "shipped"
    assert body["payment"] == "charged"
    assert body["total"] == "17.00"
    assert body["tracking"].startswith("TRK-")
    events = await headers_of(application(api), order_id)
    assert [name for name, _ in events][:2] == ["Order:Placed", "Store:StockReserved"]
    assert len(events) == 6
    assert {h["correlation_id"] for _, h in events} == {"checkout-42"}
    # Each follow-up event names the delivery it came from.
    assert all("causation_id" in h for _, h in events[1:])
    products = (await client.get("/products")).json()
    assert products == [{"sku": "MUG", "name": "Mug", "price": "8.50", "on_hand": 3}]


async def test_a_request_without_a_usable_correlation_id_gets_a_new_one(
    api: FastAPI, client: httpx.AsyncClient
) -> None:
    await seed(client)
    r = await client.post("/orders", json={"lines": [{"sku": "MUG", "quantity": 1}]})
    generated = r.headers["X-Correlation-ID"]
    uuid.UUID(generated)
    r2 = await client.post(
        "/orders",
        json={"lines": [{"sku": "MUG", "quantity": 1}]},
        headers={"X-Correlation-ID": "bad value\twith spaces"},
    )
    assert r2.headers["X-Correlation-ID"] != "bad value\twith spaces"
    await application(api).drain()
    events = await headers_of(application(api), r.json()["order_id"])
    assert {h["correlation_id"] for _, h in events} == {generated}


async def test_domain_errors_are_problem_json(api: FastAPI, client: httpx.AsyncClient) -> None:
    await seed(client)
    missing = uuid.uuid4()
    r = await client.get(f"/orders/{missing}", headers={"X-Correlation-ID": "req-7"})
    assert r.status_code == 404
    assert r.headers["content-type"] == PROBLEM
    problem = r.json()
    assert problem["error"] == "NotFound"
    assert problem["title"] == "Not Found"
    assert problem["status"] == 404
    assert str(missing) in problem["detail"]
    assert problem["correlation_id"] == "req-7"

    r = await client.post("/products", json={"sku": "BAD", "name": "Bad", "price": "0"})
    assert (r.status_code, r.json()["error"]) == (422, "RequestValidationError")
    assert r.json()["errors"][0]["loc"] == ["body", "price"]

    r = await client.post("/orders", json={"lines": [{"sku": "NOPE", "quantity": 1}]})
    assert (r.status_code, r.json()["error"]) == (404, "NotFound")
    assert "add it to the catalog first" in r.json()["detail"]

    r = await client.post("/orders", json={"lines": []})
    assert (r.status_code, r.json()["error"]) == (422, "OrderError")

    r = await client.post("/orders", json={"lines": [{"sku": "MUG", "quantity": 1}]})
    order_id = r.json()["order_id"]
    await application(api).drain()
    r = await client.post(f"/orders/{order_id}/cancel", json={"reason": "too late"})
    assert r.status_code == 409
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["error"] == "OrderStateError"
    assert "is shipped and can no longer be cancelled" in r.json()["detail"]

    r = await client.post("/orders", json={"lines": [{"sku": "MUG", "quantity": "many"}]})
    assert r.status_code == 422
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["error"] == "RequestValidationError"
    assert r.json()["errors"][0]["loc"] == ["body", "lines", 0, "quantity"]


async def test_cancelling_over_http_releases_the_stock(
    api: FastAPI, client: httpx.AsyncClient, stub: PaymentStub
) -> None:
    await seed(client)
    stub.decline_over = 0  # every charge is declined
    r = await client.post("/orders", json={"lines": [{"sku": "MUG", "quantity": 2}]})
    order_id = r.json()["order_id"]
    await application(api).drain()
    body = (await client.get(f"/orders/{order_id}")).json()
    assert body["status"] == "cancelled"
    assert body["payment"] == "declined"
    assert (await client.get("/products")).json()[0]["on_hand"] == 5


async def test_openapi_schema_describes_the_commands(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert {"/products", "/orders", "/orders/{order_id}", "/orders/{order_id}/cancel"} <= set(
        schema["paths"]
    )
    place = schema["paths"]["/orders"]["post"]["requestBody"]["content"]["application/json"]
    assert place["schema"]["$ref"].endswith("/PlaceOrder")
    assert "Line" in schema["components"]["schemas"]


class Rename(Command):
    name: str


class Collide(Command):
    pass


async def test_command_validation_and_conflicts_map_to_422_and_409(sqlite_db: str) -> None:
    mod = Module("fastapi_errors")

    @mod.handles(Rename)
    async def rename(cmd: Rename) -> str:
        return cmd.name

    @mod.handles(Collide)
    async def collide(cmd: Collide) -> None:
        raise ConcurrencyConflict("Collide lost the race 10 times; retry later.")

    api = FastAPI(lifespan=lifespan(Application([mod], sqlite_db), create_schema=True))
    install(api)

    @api.post("/rename")
    async def rename_endpoint(body: dict[str, Any], engine: EngineDep) -> str:
        return str(await engine.run(Rename, body))

    @api.post("/collide")
    async def collide_endpoint(engine: EngineDep) -> None:
        await engine.run(Collide())

    async with api.router.lifespan_context(api):
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.post("/rename", json={"name": "ok"})).json() == "ok"
            r = await c.post("/rename", json={"name": 5})
            assert (r.status_code, r.json()["error"]) == (422, "CommandValidationError")
            assert r.headers["content-type"] == PROBLEM
            r = await c.post("/collide")
            assert (r.status_code, r.json()["error"]) == (409, "ConcurrencyConflict")
            assert "retry later" in r.json()["detail"]


async def test_status_page_is_off_by_default_and_served_behind_the_token(
    sqlite_db: str, stub: PaymentStub, api: FastAPI, client: httpx.AsyncClient
) -> None:
    assert (await client.get("/dddframe/api/status")).status_code == 404  # off by default
    token = "shop-status-token-0123"
    secured = make_api(shop_settings(sqlite_db, stub, status_token=token))
    async with secured.router.lifespan_context(secured):
        transport = httpx.ASGITransport(app=secured)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as c:
            await seed(c)
            r = await c.post("/orders", json={"lines": [{"sku": "MUG", "quantity": 1}]})
            assert r.status_code == 201, r.text
            await application(secured).drain()
            # The fixture's API consumes the same database: its passes move positions too.
            await application(api).drain()
            assert (await c.get("/dddframe/api/status")).status_code == 401
            r = await c.get("/dddframe/api/status", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
            subscriptions = r.json()["subscriptions"]
            assert subscriptions and all(s["lag_events"] == 0 for s in subscriptions)
            page = await c.get("/dddframe/", headers={"Authorization": f"Bearer {token}"})
            assert page.status_code == 200 and "dead letters" in page.text.lower()


def test_status_page_needs_both_the_application_and_a_token() -> None:
    from dddframe.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="status_token"):
        install(FastAPI(), status_token="a-token-without-an-app")
    app = Application(modules=[], database_url="sqlite+aiosqlite://")
    with pytest.raises(ConfigurationError, match="16 characters"):
        install(FastAPI(), status_page=app, status_token="short")


def test_get_application_without_the_lifespan_says_what_to_do() -> None:
    from dddframe.errors import ConfigurationError

    api = FastAPI()

    class FakeRequest:
        app = api

    with pytest.raises(ConfigurationError, match="lifespan"):
        get_application(FakeRequest())  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_api_served_by_a_real_uvicorn_process(tmp_path: Path, stub: PaymentStub) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DDDFRAME_SHOP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/served.db",
        "DDDFRAME_SHOP_BUS": "inprocess",
        "DDDFRAME_SHOP_PAYMENT_URL": stub.url,
        "DDDFRAME_SHOP_SETTINGS_FILE": str(tmp_path / "none.env"),
    }
    cmd = [sys.executable, "-m", "uvicorn", "example_shop.api:app", "--port", str(port)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=5) as http:
            for _ in range(300):
                try:
                    if http.get("/openapi.json").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.05)
            http.post("/products", json={"sku": "MUG", "name": "Mug", "price": "2.00"})
            http.post("/products/MUG/stock", json={"quantity": 1})
            r = http.post(
                "/orders",
                json={"lines": [{"sku": "MUG", "quantity": 1}]},
                headers={"X-Correlation-ID": "over-the-wire"},
            )
            assert r.status_code == 201, r.text
            assert r.headers["x-correlation-id"] == "over-the-wire"
            order = f"/orders/{r.json()['order_id']}"
            for _ in range(300):
                if http.get(order).json()["status"] == "shipped":
                    break
                time.sleep(0.05)
            assert http.get(order).json()["status"] == "shipped"
            r = http.get(f"/orders/{uuid.uuid4()}")
            assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=20)
    # A clean shutdown: the lifespan stopped the application.
    assert "Application shutdown complete" in output, output
