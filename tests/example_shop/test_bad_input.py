"""Bad input never gets a 500 from the shop: pydantic rejects what the columns cannot hold
(422 problem+json), a duplicate answers 409, an unknown product 404, an oversized body 413, and
an unexpected error a problem+json 500 carrying the correlation id."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from dddframe import Application
from dddframe.integrations.fastapi import install
from example_shop.api import make_api
from example_shop.catalog import Product
from example_shop.payment_stub import PaymentStub
from example_shop.store import Stock
from tests.example_shop.conftest import shop_settings

ROOT = Path(__file__).resolve().parents[2]
PROBLEM = "application/problem+json"

# (path, body): each must answer 422 problem+json naming the field, and store nothing.
INVALID: list[tuple[str, dict[str, Any], list[Any]]] = [
    ("/products", {"sku": "S" * 40, "name": "Long", "price": "1.00"}, ["body", "sku"]),
    ("/products", {"sku": "", "name": "Empty", "price": "1.00"}, ["body", "sku"]),
    ("/products", {"sku": "A B", "name": "Space", "price": "1.00"}, ["body", "sku"]),
    ("/products", {"sku": "LONG", "name": "n" * 200, "price": "1.00"}, ["body", "name"]),
    ("/products", {"sku": "BIG", "name": "Big", "price": 1e20}, ["body", "price"]),
    ("/products", {"sku": "EXACT", "name": "Exact", "price": "1.005"}, ["body", "price"]),
    ("/products", {"sku": "NAN", "name": "NaN", "price": "NaN"}, ["body", "price"]),
    ("/products", {"sku": "NEG", "name": "Neg", "price": "-1"}, ["body", "price"]),
    ("/products/MUG/stock", {"quantity": 2**31}, ["body", "quantity"]),
    ("/products/MUG/stock", {"quantity": 10**20}, ["body", "quantity"]),
    ("/products/MUG/stock", {"quantity": 0}, ["body", "quantity"]),
    ("/orders", {"lines": [{"sku": "MUG", "quantity": 2**31}]}, ["body", "lines", 0, "quantity"]),
    ("/orders", {"lines": [{"sku": "MUG", "quantity": 10**20}]}, ["body", "lines", 0, "quantity"]),
    ("/orders", {"lines": [{"sku": "M" * 40, "quantity": 1}]}, ["body", "lines", 0, "sku"]),
    ("/orders", {"lines": [{"sku": "MUG", "quantity": 1}] * 101}, ["body", "lines"]),
]


@pytest.fixture
async def client(sqlite_db: str, stub: PaymentStub) -> AsyncIterator[httpx.AsyncClient]:
    api = make_api(shop_settings(sqlite_db, stub))
    async with api.router.lifespan_context(api):
        transport = httpx.ASGITransport(app=api, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as c:
            r = await c.post("/products", json={"sku": "MUG", "name": "Mug", "price": "8.50"})
            assert r.status_code == 201, r.text
            yield c


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM, r.text
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["correlation_id"] == r.headers["x-correlation-id"]
    return body


@pytest.mark.parametrize(("path", "body", "loc"), INVALID)
async def test_values_the_columns_cannot_hold_are_rejected_with_422(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], loc: list[Any]
) -> None:
    problem = assert_problem(await client.post(path, json=body), 422)
    assert problem["error"] == "RequestValidationError"
    assert problem["errors"][0]["loc"][: len(loc)] == loc
    products = (await client.get("/products")).json()
    assert products == [{"sku": "MUG", "name": "Mug", "price": "8.50", "on_hand": 0}]


async def test_a_price_is_kept_exactly(client: httpx.AsyncClient) -> None:
    r = await client.post("/products", json={"sku": "TEA", "name": "Tea", "price": "1.05"})
    assert r.status_code == 201, r.text
    prices = {p["sku"]: p["price"] for p in (await client.get("/products")).json()}
    assert prices["TEA"] == "1.05"


async def test_conflicts_unknown_products_and_oversized_bodies(client: httpx.AsyncClient) -> None:
    again = {"sku": "MUG", "name": "Another mug", "price": "9.00"}
    problem = assert_problem(await client.post("/products", json=again), 409)
    assert problem["error"] == "DuplicateProduct" and "'MUG' exists already" in problem["detail"]

    problem = assert_problem(await client.post("/products/NOPE/stock", json={"quantity": 1}), 404)
    assert "product 'NOPE' not found" in problem["detail"]
    too_long = "/products/" + "S" * 40 + "/stock"
    assert_problem(await client.post(too_long, json={"quantity": 1}), 422)

    missing = "0190a3f2-0000-7000-8000-000000000000"
    problem = assert_problem(await client.get(f"/orders/{missing}"), 404)
    assert problem["detail"] == f"order {missing} not found"
    problem = assert_problem(await client.post(f"/orders/{missing}/cancel", json={}), 404)
    assert problem["detail"] == f"order {missing} not found"  # not "use find()"
    long_reason = {"reason": "r" * 300}
    assert_problem(await client.post(f"/orders/{missing}/cancel", json=long_reason), 422)

    huge = json.dumps({"sku": "HUGE", "name": "x" * 2_000_000, "price": "1.00"})
    headers = {"content-type": "application/json"}
    problem = assert_problem(await client.post("/products", content=huge, headers=headers), 413)
    assert "larger than 1048576 bytes" in problem["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(20):
            yield b" " * 100_000

    assert_problem(await client.post("/products", content=chunks(), headers=headers), 413)
    assert_problem(await client.get("/no/such/path"), 404)
    assert_problem(await client.delete("/products"), 405)


async def test_stock_cannot_overflow_its_column(sqlite_db: str, stub: PaymentStub) -> None:
    api = make_api(shop_settings(sqlite_db, stub))
    async with api.router.lifespan_context(api):
        application = api.state.dddframe
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as c:
            await c.post("/products", json={"sku": "MUG", "name": "Mug", "price": "8.50"})
            await c.post("/products/MUG/stock", json={"quantity": 1})
            async with application.database.session() as s, s.begin():
                await s.execute(update(Stock).values(on_hand=2**31 - 10))  # a busy store
            r = await c.post("/products/MUG/stock", json={"quantity": 1_000_000})
    problem = assert_problem(r, 422)
    assert problem["error"] == "StockError" and "at most 2147483647" in problem["detail"]


async def test_an_unexpected_error_is_a_problem_500_with_the_correlation_id(
    sqlite_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    api = FastAPI()
    install(api)

    @api.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    transport = httpx.ASGITransport(app=api, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.get("/boom", headers={"X-Correlation-ID": "req-500"})
    problem = assert_problem(r, 500)
    assert problem["correlation_id"] == "req-500" and "hunter2" not in r.text
    assert "report it with the correlation id" in problem["detail"]
    assert any("req-500" in rec.getMessage() and rec.exc_info for rec in caplog.records)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path, stub: PaymentStub) -> Iterator[httpx.Client]:
    """The shop API in a real uvicorn process on SQLite."""
    port = free_port()
    env = {
        **os.environ,
        "DDDFRAME_SHOP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/bad-input.db",
        "DDDFRAME_SHOP_BUS": "inprocess",
        "DDDFRAME_SHOP_PAYMENT_URL": stub.url,
        "DDDFRAME_SHOP_SETTINGS_FILE": str(tmp_path / "none.env"),
    }
    cmd = [sys.executable, "-m", "uvicorn", "example_shop.api:app", "--port", str(port)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for _ in range(300):
                try:
                    if http.get("/openapi.json").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.05)
            yield http
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_over_http_the_issue_inputs_never_answer_500(served: httpx.Client) -> None:
    """The inputs that answered a plain-text 500 before, sent to a real server."""
    http = served
    assert http.post("/products", json={"sku": "MUG", "name": "Mug", "price": "2.00"}).is_success
    sent = [
        ("/products", {"sku": "MUG", "name": "Mug", "price": "2.00"}, 409),
        ("/products", {"sku": "S" * 40, "name": "x", "price": "1.00"}, 422),
        ("/products", {"sku": "NAME", "name": "n" * 200, "price": "1.00"}, 422),
        ("/products", {"sku": "BIG", "name": "x", "price": 1e20}, 422),
        ("/products", {"sku": "", "name": "x", "price": "1.00"}, 422),
        ("/products", {"sku": "ODD", "name": "x", "price": "1.005"}, 422),
        ("/products/MUG/stock", {"quantity": 2**31}, 422),
        ("/products/MUG/stock", {"quantity": 10**20}, 422),
        ("/products/NOPE/stock", {"quantity": 1}, 404),
        ("/orders", {"lines": [{"sku": "MUG", "quantity": 2**31}]}, 422),
    ]
    for path, body, status in sent:
        r = http.post(path, json=body)
        assert (r.status_code, r.headers["content-type"]) == (status, PROBLEM), (path, r.text)
        assert r.json()["correlation_id"] == r.headers["x-correlation-id"]
    big = http.post("/products", content=b"{" + b" " * 2_000_000 + b"}")
    assert (big.status_code, big.headers["content-type"]) == (413, PROBLEM)


async def test_the_stored_price_is_the_price_of_the_event(sqlite_db: str, stub: Any) -> None:
    api = make_api(shop_settings(sqlite_db, stub))
    async with api.router.lifespan_context(api):
        application = api.state.dddframe
        assert isinstance(application, Application)
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as c:
            r = await c.post("/products", json={"sku": "PEN", "name": "Pen", "price": 1.10})
            assert r.status_code == 201, r.text
        async with application.database.session() as s:
            product = (await s.scalars(select(Product))).one()
        assert product.price == Decimal("1.10")
