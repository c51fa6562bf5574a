"""Reporting: the order summaries, a projection (read model) of the ordering events.

One row per order with its status, total, number of items and tracking number, kept up to date
by the bus and rebuilt from the outbox with ``dddframe projections rebuild OrderSummary --app
example_shop.app:app`` while the shop keeps running (see docs/projections.md). The API serves it
at ``GET /order-summaries`` and ``GET /orders/{order_id}/summary``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import Column, DateTime, Integer, MetaData, Numeric, String, Table, select

from dddframe import Application, Module, Projection, ProjectionView
from example_shop.events import OrderCancelled, OrderPaid, OrderPlaced, OrderShipped

__all__ = [
    "OrderStatus",
    "OrderSummary",
    "OrderSummaryView",
    "order_summaries",
    "reporting",
    "summaries",
]

metadata = MetaData()

order_summaries = Table(
    "shop_order_summaries",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("status", String(16), nullable=False, index=True),
    Column("total", Numeric(12, 2), nullable=False),
    Column("items", Integer, nullable=False),
    Column("tracking", String(64), nullable=True),
    Column("cancel_reason", String(200), nullable=True),
    Column("placed_at", DateTime(timezone=True), nullable=False),
)


class OrderSummary(Projection):
    """Order summaries for listings: one row per order, written by the events that change it."""

    tables = (order_summaries,)

    async def on_placed(self, event: OrderPlaced, view: ProjectionView) -> None:
        assert view.envelope is not None
        await view.session.execute(
            view.table(order_summaries)
            .insert()
            .values(
                order_id=str(event.order_id),
                status="placed",
                total=event.total,
                items=sum(line.quantity for line in event.lines),
                placed_at=view.envelope.occurred_at,
            )
        )

    async def on_paid(self, event: OrderPaid, view: ProjectionView) -> None:
        await self._set(view, str(event.order_id), status="paid")

    async def on_shipped(self, event: OrderShipped, view: ProjectionView) -> None:
        await self._set(view, str(event.order_id), status="shipped", tracking=event.tracking)

    async def on_cancelled(self, event: OrderCancelled, view: ProjectionView) -> None:
        await self._set(
            view, str(event.order_id), status="cancelled", cancel_reason=event.reason[:200]
        )

    async def _set(self, view: ProjectionView, order_id: str, **values: object) -> None:
        t = view.table(order_summaries)
        await view.session.execute(t.update().where(t.c.order_id == order_id).values(**values))


reporting = Module("reporting")
reporting.projection(
    OrderSummary,
    listen={
        "Order:Placed": "on_placed",
        "Order:Paid": "on_paid",
        "Order:Shipped": "on_shipped",
        "Order:Cancelled": "on_cancelled",
    },
)


OrderStatus = Literal["placed", "paid", "shipped", "cancelled"]


class OrderSummaryView(BaseModel):
    order_id: uuid.UUID
    status: str
    total: Decimal
    items: int
    tracking: str | None
    cancel_reason: str | None
    placed_at: datetime


async def summaries(
    app: Application,
    *,
    order_id: uuid.UUID | None = None,
    status: OrderStatus | None = None,
    limit: int = 50,
) -> list[OrderSummaryView]:
    """Read the summaries from the projection's active generation, newest first."""
    async with app.projections.read(OrderSummary) as view:
        t = view.table(order_summaries)
        q = select(t).order_by(t.c.placed_at.desc(), t.c.order_id).limit(limit)
        if order_id is not None:
            q = q.where(t.c.order_id == str(order_id))
        if status is not None:
            q = q.where(t.c.status == status)
        rows = (await view.session.execute(q)).mappings().all()
    return [OrderSummaryView.model_validate(dict(r)) for r in rows]
