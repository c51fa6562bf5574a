"""Ordering: the Order aggregate and its lines.

An order is placed, then paid once the payment context charged it, then shipped; it is cancelled
when the store rejects it, when the payment is declined or does not come in time, or on the
customer's request before it is paid. The fulfilment process manager (example_shop.fulfilment)
sends those commands; the order records every charge itself.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated

from pydantic import Field, StringConstraints
from sqlalchemy import ForeignKey, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dddframe import Aggregate, Command, Entity, EventContext, Module, Repository
from dddframe.errors import DomainError, NotFound
from example_shop.catalog import Product
from example_shop.events import (
    MAX_AMOUNT,
    Line,
    OrderCancelled,
    OrderPaid,
    OrderPlaced,
    OrderRefundDue,
    OrderShipped,
    PaymentCharged,
    Reason,
)

__all__ = [
    "CancelOrder",
    "Line",
    "MarkShipped",
    "Order",
    "OrderError",
    "OrderLine",
    "OrderStateError",
    "PayOrder",
    "PlaceOrder",
    "ordering",
]


class OrderError(DomainError):
    """An order was asked for something invalid (no lines, a bad quantity)."""

    http_status = 422


class OrderStateError(OrderError):
    """An order was asked for something its current status does not allow."""

    http_status = 409


class OrderLine(Entity):
    __tablename__ = "shop_order_lines"
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("shop_orders.id"))
    sku: Mapped[str] = mapped_column(String(32))
    quantity: Mapped[int]
    unit_price: Mapped[Decimal] = mapped_column(Numeric(12, 2))


class Order(Aggregate):
    """placed -> paid -> shipped, or placed -> cancelled (a payment that arrives after the
    cancellation raises Order:RefundDue)."""

    __tablename__ = "shop_orders"
    status: Mapped[str] = mapped_column(String(16), default="new")
    cancel_reason: Mapped[str | None] = mapped_column(String(255), default=None)
    tracking: Mapped[str | None] = mapped_column(String(64), default=None)
    lines: Mapped[list[OrderLine]] = relationship(cascade="all, delete-orphan", lazy="selectin")

    @property
    def total(self) -> Decimal:
        return sum((line.unit_price * line.quantity for line in self.lines), Decimal(0))

    def _lines(self) -> list[Line]:
        return [Line(sku=line.sku, quantity=line.quantity) for line in self.lines]

    @classmethod
    def place(cls, lines: list[tuple[Product, int]]) -> Order:
        if not lines:
            raise OrderError("an order needs at least one line")
        skus = [p.id for p, _ in lines]
        if len(set(skus)) != len(skus):
            raise OrderError("each product may appear on one line only; add up the quantities")
        for product, quantity in lines:
            if quantity < 1:
                raise OrderError(f"{product.id}: quantity must be at least 1, got {quantity}")
        total = sum((p.price * q for p, q in lines), Decimal(0))
        if total > MAX_AMOUNT:
            raise OrderError(f"an order may cost at most {MAX_AMOUNT}, this one costs {total}")
        order = cls(
            status="placed",
            lines=[OrderLine(sku=p.id, quantity=q, unit_price=p.price) for p, q in lines],
        )
        order.domain_event(OrderPlaced(order_id=order.id, lines=order._lines(), total=order.total))
        return order

    def cancel(self, reason: str) -> None:
        if self.status == "cancelled":
            return  # cancelling twice changes nothing (redeliveries are harmless)
        if self.status != "placed":
            raise OrderStateError(
                f"order {self.id} is {self.status} and can no longer be cancelled"
            )
        self.status = "cancelled"
        self.cancel_reason = reason
        self.domain_event(OrderCancelled(order_id=self.id, reason=reason))

    def pay(self, amount: Decimal) -> None:
        """Record the payment; one that arrives after a cancellation is to be refunded."""
        if self.status in ("paid", "shipped"):
            return  # the charge was announced twice
        if self.status == "cancelled":
            self.domain_event(OrderRefundDue(order_id=self.id, amount=amount))
            return
        if self.status != "placed":
            raise OrderStateError(f"order {self.id} is {self.status} and cannot be paid")
        if amount != self.total:
            raise OrderError(f"order {self.id} costs {self.total}, a payment of {amount} is wrong")
        self.status = "paid"
        self.domain_event(OrderPaid(order_id=self.id, amount=amount, lines=self._lines()))

    def mark_shipped(self, tracking: str) -> None:
        if self.status == "shipped":
            return
        if self.status != "paid":
            raise OrderStateError(f"order {self.id} is {self.status}; only paid orders ship")
        self.status = "shipped"
        self.tracking = tracking
        self.domain_event(OrderShipped(order_id=self.id, tracking=tracking))


class PlaceOrder(Command):
    lines: list[Line] = Field(max_length=100)


class CancelOrder(Command):
    order_id: uuid.UUID
    reason: Reason


class PayOrder(Command):
    order_id: uuid.UUID
    amount: Annotated[Decimal, Field(max_digits=12, decimal_places=2)]


class MarkShipped(Command):
    order_id: uuid.UUID
    tracking: Annotated[str, StringConstraints(min_length=1, max_length=64)]


ordering = Module("ordering")


@ordering.handles(PlaceOrder)
async def place_order(
    cmd: PlaceOrder, orders: Repository[Order], products: Repository[Product]
) -> uuid.UUID:
    chosen: list[tuple[Product, int]] = []
    for line in cmd.lines:
        product = await products.find(line.sku)
        if product is None:
            raise NotFound(f"No product with SKU {line.sku!r}; add it to the catalog first.")
        chosen.append((product, line.quantity))
    order = Order.place(chosen)
    orders.add(order)
    return order.id


@ordering.handles(CancelOrder)
async def cancel_order(cmd: CancelOrder, orders: Repository[Order]) -> None:
    order = await orders.find(cmd.order_id)
    if order is None:
        raise NotFound(f"order {cmd.order_id} not found")
    order.cancel(cmd.reason)


@ordering.handles(PayOrder)
async def pay_order(cmd: PayOrder, orders: Repository[Order]) -> None:
    (await orders.get(cmd.order_id)).pay(cmd.amount)


@ordering.handles(MarkShipped)
async def mark_shipped(cmd: MarkShipped, orders: Repository[Order]) -> None:
    (await orders.get(cmd.order_id)).mark_shipped(cmd.tracking)


class OrderingController:
    async def on_payment_charged(self, event: PaymentCharged, ctx: EventContext) -> None:
        """Every charge is recorded on its order, one after a cancellation too (it becomes
        Order:RefundDue); the rest of the flow is the fulfilment process manager's."""
        await ctx.run(PayOrder(order_id=event.order_id, amount=event.amount))


ordering.controller(OrderingController)
ordering.listen("Payment:Charged", "OrderingController.on_payment_charged")
