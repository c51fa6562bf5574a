"""The shop's HTTP API (``make serve``; OpenAPI at ``/docs`` and ``/openapi.json``).

Commands go through ``engine.run``; queries read the shop's tables. Domain errors come back as
``application/problem+json``, and an ``X-Correlation-ID`` header follows the order through every
event it causes.

>>> api = make_api(ShopSettings(database_url="sqlite+aiosqlite://"))
>>> sorted(api.openapi()["paths"])[1:4]
['/orders', '/orders/{order_id}', '/orders/{order_id}/cancel']
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated

from fastapi import FastAPI, Path, Query, status
from pydantic import BaseModel
from sqlalchemy import select

from dddframe.errors import NotFound
from dddframe.integrations.fastapi import ApplicationDep, EngineDep, install, lifespan
from example_shop.app import make_app
from example_shop.catalog import AddProduct, Product
from example_shop.events import Line, Quantity, Reason
from example_shop.order_summary import OrderStatus, OrderSummaryView, summaries
from example_shop.ordering import CancelOrder, Order, PlaceOrder
from example_shop.payment import Payment
from example_shop.settings import ShopSettings
from example_shop.store import ReceiveStock, Stock

__all__ = ["app", "make_api"]


class ProductView(BaseModel):
    sku: str
    name: str
    price: Decimal
    on_hand: int


class OrderView(BaseModel):
    order_id: uuid.UUID
    status: str
    lines: list[Line]
    total: Decimal
    cancel_reason: str | None
    payment: str | None
    tracking: str | None


class Placed(BaseModel):
    order_id: uuid.UUID


class StockLevel(BaseModel):
    sku: str
    on_hand: int


class Delivery(BaseModel):
    quantity: Quantity


class Cancellation(BaseModel):
    reason: Reason = "cancelled by the customer"


SkuPath = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


def make_api(settings: ShopSettings | None = None, *, consume: bool | None = None) -> FastAPI:
    """The API on an application built from ``settings``; ``consume=False`` (or the setting
    ``DDDFRAME_SHOP_CONSUME=0``) makes it a pure writer and leaves the listeners to
    ``dddframe worker`` processes."""
    settings = settings or ShopSettings()
    consume = settings.consume if consume is None else consume
    application = make_app(consume=consume, settings=settings)
    api = FastAPI(
        title="dddframe example shop",
        version="0.1.0",
        lifespan=lifespan(application, create_schema=settings.create_schema),
    )
    install(
        api,
        status_page=application if settings.status_token else None,
        status_token=settings.status_token,
    )

    @api.post("/products", status_code=status.HTTP_201_CREATED, tags=["catalog"])
    async def add_product(cmd: AddProduct, engine: EngineDep) -> StockLevel:
        """Add a product to the catalog (its stock starts at 0)."""
        sku = await engine.run(cmd)
        return StockLevel(sku=sku, on_hand=0)

    @api.get("/products", tags=["catalog"])
    async def list_products(app: ApplicationDep) -> list[ProductView]:
        async with app.database.session() as s:
            products = (await s.scalars(select(Product).order_by(Product.id))).all()
            stock = {x.id: x.on_hand for x in (await s.scalars(select(Stock))).all()}
        return [
            ProductView(sku=p.id, name=p.name, price=p.price, on_hand=stock.get(p.id, 0))
            for p in products
        ]

    @api.post("/products/{sku}/stock", tags=["store"])
    async def receive_stock(
        sku: SkuPath, delivery: Delivery, app: ApplicationDep, engine: EngineDep
    ) -> StockLevel:
        """Stock arrived at the store (for a product of the catalog)."""
        async with app.database.session() as s:
            if await s.get(Product, sku) is None:
                raise NotFound(f"product {sku!r} not found; add it with POST /products first")
        on_hand = await engine.run(ReceiveStock(sku=sku, quantity=delivery.quantity))
        return StockLevel(sku=sku, on_hand=on_hand)

    @api.post("/orders", status_code=status.HTTP_201_CREATED, tags=["ordering"])
    async def place_order(cmd: PlaceOrder, engine: EngineDep) -> Placed:
        """Place an order; the store, payment and shipping follow through events."""
        return Placed(order_id=await engine.run(cmd))

    @api.get("/orders/{order_id}", tags=["ordering"])
    async def get_order(order_id: uuid.UUID, app: ApplicationDep) -> OrderView:
        async with app.database.session() as s:
            order = await s.get(Order, order_id)
            if order is None:
                raise NotFound(f"order {order_id} not found")
            payment = await s.get(Payment, order_id)
            return OrderView(
                order_id=order.id,
                status=order.status,
                lines=[Line(sku=ln.sku, quantity=ln.quantity) for ln in order.lines],
                total=order.total,
                cancel_reason=order.cancel_reason,
                payment=payment.status if payment else None,
                tracking=order.tracking,
            )

    @api.post("/orders/{order_id}/cancel", tags=["ordering"])
    async def cancel_order(order_id: uuid.UUID, body: Cancellation, engine: EngineDep) -> Placed:
        """Cancel an order that is not paid yet; its reserved stock is released."""
        await engine.run(CancelOrder(order_id=order_id, reason=body.reason))
        return Placed(order_id=order_id)

    @api.get("/order-summaries", tags=["reporting"])
    async def list_order_summaries(
        app: ApplicationDep,
        order_status: Annotated[OrderStatus | None, Query(alias="status")] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 50,
    ) -> list[OrderSummaryView]:
        """The newest order summaries (the OrderSummary projection), optionally by status."""
        return await summaries(app, status=order_status, limit=limit)

    @api.get("/orders/{order_id}/summary", tags=["reporting"])
    async def get_order_summary(order_id: uuid.UUID, app: ApplicationDep) -> OrderSummaryView:
        found = await summaries(app, order_id=order_id)
        if not found:
            raise NotFound(f"no summary of order {order_id} (yet)")
        return found[0]

    return api


app = make_api()
