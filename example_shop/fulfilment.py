"""Fulfilment: the process manager that takes an order from placed to shipped or cancelled.

One ``OrderFulfilment`` instance per order (its id is the order id). It reacts to the other
contexts' events and sends their commands, so the flow lives in one place:

- ``Order:Placed`` -> reserve the stock, and wait for the payment under a timer;
- ``Store:StockReserved`` -> the payment context charges the order (its own listener, since
  the charge talks to the provider);
- ``Payment:Charged`` -> the payment timer is cancelled (the order records the payment
  itself); ``Order:Paid`` -> the parcel is shipped;
  ``Shipping:Shipped`` -> the order is marked shipped and the process completes;
- ``Order:Rejected`` (no stock), ``Payment:Declined``, or the payment timer firing -> the order
  is cancelled; ``Order:Cancelled`` (for any reason, the customer's too) -> the stock is put
  back (the compensation) and the process completes.

>>> OrderFulfilment(id="0190...").state
'placed'
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from dddframe import Module, ProcessContext, ProcessManager
from example_shop.events import (
    OrderCancelled,
    OrderPaid,
    OrderPlaced,
    OrderRejected,
    ParcelShipped,
    PaymentCharged,
    PaymentDeclined,
    StockReserved,
)
from example_shop.ordering import CancelOrder, MarkShipped
from example_shop.settings import ShopSettings
from example_shop.shipping import ShipOrder
from example_shop.store import ReleaseStock, ReserveStock

__all__ = ["OrderFulfilment", "make_fulfilment_module"]

UNPAID = "payment not received in time"


class OrderFulfilment(ProcessManager):
    """placed -> reserved -> paid -> shipped, or -> cancelling -> cancelled."""

    __tablename__ = "shop_fulfilments"
    state: Mapped[str] = mapped_column(String(16), default="placed")
    lines: Mapped[list[dict[str, object]]] = mapped_column(JSON, default=list)

    def on_placed(self, event: OrderPlaced, ctx: ProcessContext, settings: ShopSettings) -> None:
        """Reserve the stock and wait ``settings.payment_deadline`` for the payment (the
        settings come from the application's injector, like a handler's services)."""
        self.lines = [line.model_dump() for line in event.lines]
        ctx.send(ReserveStock(order_id=event.order_id, lines=event.lines, total=event.total))
        self.timeout("payment", after=timedelta(seconds=settings.payment_deadline))

    def on_reserved(self, event: StockReserved) -> None:
        if self.state == "placed":
            self.state = "reserved"  # the payment context charges it now

    def on_rejected(self, event: OrderRejected, ctx: ProcessContext) -> None:
        self._cancel(ctx, event.reason)

    def on_declined(self, event: PaymentDeclined, ctx: ProcessContext) -> None:
        self._cancel(ctx, f"payment declined: {event.reason}")

    def on_payment_timeout(self, ctx: ProcessContext) -> None:
        self._cancel(ctx, UNPAID)

    def on_charged(self, event: PaymentCharged) -> None:
        # The order itself records the payment (ordering's own listener, which also sees a
        # payment that arrives after a cancellation and makes it a refund): here it only
        # stops the wait.
        self.cancel_timeout("payment")

    def on_paid(self, event: OrderPaid, ctx: ProcessContext) -> None:
        self.state = "paid"
        ctx.send(ShipOrder(order_id=event.order_id, lines=event.lines))

    def on_shipped(self, event: ParcelShipped, ctx: ProcessContext) -> None:
        self.state = "shipped"
        ctx.send(MarkShipped(order_id=event.order_id, tracking=event.tracking))
        self.complete()

    def on_cancelled(self, event: OrderCancelled, ctx: ProcessContext) -> None:
        self.state = "cancelled"
        ctx.send(ReleaseStock(order_id=event.order_id))  # compensation: the stock goes back
        self.complete()

    def _cancel(self, ctx: ProcessContext, reason: str) -> None:
        if self.state in ("cancelling", "paid"):
            return
        self.state = "cancelling"
        self.cancel_timeout("payment")
        ctx.send(CancelOrder(order_id=self.id, reason=reason[:255] or "no reason given"))


def make_fulfilment_module() -> Module:
    """The fulfilment process (its payment deadline is the injected ``ShopSettings``')."""
    fulfilment = Module("fulfilment")
    fulfilment.process(
        OrderFulfilment,
        correlate_by="order_id",
        starts_with="Order:Placed",
        listen={
            "Order:Placed": "on_placed",
            "Store:StockReserved": "on_reserved",
            "Order:Rejected": "on_rejected",
            "Payment:Declined": "on_declined",
            "Payment:Charged": "on_charged",
            "Order:Paid": "on_paid",
            "Shipping:Shipped": "on_shipped",
            "Order:Cancelled": "on_cancelled",
        },
        timeouts=["payment"],
    )
    return fulfilment
