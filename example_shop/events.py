"""The shop's published language: the events its bounded contexts exchange.

Each context records its own events and reacts to the others' only through listeners bound by
event name (``module.listen("Order:Placed", "StoreController.on_order_placed")``). The classes
live here, not in the modules that record them, so that no context imports another's code.

>>> OrderPlaced.event_name()
'Order:Placed'
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from dddframe import DomainEvent

MAX_QUANTITY = 1_000_000
"""The most of one product a line, or a delivery, may hold."""
MAX_AMOUNT = Decimal("9999999999.99")
"""The largest price or order total the shop stores (its columns are NUMERIC(12, 2))."""

Sku = Annotated[
    str,
    StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"),
    Field(description="1-32 letters, digits, '.', '_' or '-', starting with a letter or digit"),
]
Quantity = Annotated[int, Field(ge=1, le=MAX_QUANTITY, description="1 to 1,000,000")]
Price = Annotated[
    Decimal,
    Field(
        gt=0,
        max_digits=12,
        decimal_places=2,
        description="positive, at most 2 decimal places and 10 digits before the point",
    ),
]
ProductName = Annotated[str, StringConstraints(min_length=1, max_length=120)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class Line(BaseModel):
    """One product and how many of it."""

    sku: Sku
    quantity: Quantity


class ProductAdded(DomainEvent):
    __event_name__ = "Catalog:ProductAdded"
    sku: str
    name: str
    price: Decimal


class OrderPlaced(DomainEvent):
    __event_name__ = "Order:Placed"
    order_id: uuid.UUID
    lines: list[Line]
    total: Decimal


class OrderRejected(DomainEvent):
    """Recorded by the store when it cannot reserve the stock of an order."""

    __event_name__ = "Order:Rejected"
    order_id: uuid.UUID
    reason: str


class OrderCancelled(DomainEvent):
    __event_name__ = "Order:Cancelled"
    order_id: uuid.UUID
    reason: str


class OrderPaid(DomainEvent):
    __event_name__ = "Order:Paid"
    order_id: uuid.UUID
    amount: Decimal
    lines: list[Line]


class OrderRefundDue(DomainEvent):
    """A payment arrived for an order cancelled meanwhile: the money goes back."""

    __event_name__ = "Order:RefundDue"
    order_id: uuid.UUID
    amount: Decimal


class OrderShipped(DomainEvent):
    __event_name__ = "Order:Shipped"
    order_id: uuid.UUID
    tracking: str


class StockReserved(DomainEvent):
    __event_name__ = "Store:StockReserved"
    order_id: uuid.UUID
    lines: list[Line]
    total: Decimal


class StockReleased(DomainEvent):
    __event_name__ = "Store:StockReleased"
    order_id: uuid.UUID
    lines: list[Line]


class PaymentCharged(DomainEvent):
    __event_name__ = "Payment:Charged"
    order_id: uuid.UUID
    amount: Decimal


class PaymentDeclined(DomainEvent):
    __event_name__ = "Payment:Declined"
    order_id: uuid.UUID
    amount: Decimal
    reason: str


class PaymentRefunded(DomainEvent):
    __event_name__ = "Payment:Refunded"
    order_id: uuid.UUID
    amount: Decimal


class ParcelShipped(DomainEvent):
    __event_name__ = "Shipping:Shipped"
    order_id: uuid.UUID
    tracking: str
