"""Store: stock per product; reserves stock for placed orders (or rejects them) and releases it
when a reserved order is cancelled."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from dddframe import Aggregate, Command, Module, Repository
from dddframe.errors import DomainError
from example_shop.events import (
    Line,
    OrderRejected,
    Quantity,
    Sku,
    StockReleased,
    StockReserved,
)

__all__ = [
    "ReceiveStock",
    "ReleaseStock",
    "Reservation",
    "ReserveStock",
    "Stock",
    "StockError",
    "store",
]


MAX_ON_HAND = 2**31 - 1  # on_hand is a 32-bit INTEGER column


class StockError(DomainError):
    """Stock cannot go below zero, and only positive quantities arrive."""

    http_status = 422


class Stock(Aggregate):
    __tablename__ = "shop_stock"
    # The SKU is the id; Aggregate allows overriding the id type, mypy cannot see it.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # type: ignore[assignment]
    on_hand: Mapped[int] = mapped_column(default=0)

    def receive(self, quantity: int) -> None:
        if quantity < 1:
            raise StockError(f"{self.id}: received quantity must be positive, got {quantity}")
        if self.on_hand + quantity > MAX_ON_HAND:
            raise StockError(
                f"{self.id}: the store holds at most {MAX_ON_HAND} units of a product "
                f"({self.on_hand} on hand, {quantity} received)"
            )
        self.on_hand += quantity

    def can_take(self, quantity: int) -> bool:
        return self.on_hand >= quantity

    def take(self, quantity: int) -> None:
        if not self.can_take(quantity):
            raise StockError(f"{self.id}: {quantity} wanted, {self.on_hand} on hand")
        self.on_hand -= quantity

    def put_back(self, quantity: int) -> None:
        self.on_hand += quantity


class Reservation(Aggregate):
    """The store's answer to one order (id = the order's id).

    reserved -> released, or rejected; ``cancelled`` when the order was cancelled before the
    store saw it placed (listeners of different events run in parallel), so a late reservation
    request is refused.
    """

    __tablename__ = "shop_reservations"
    status: Mapped[str] = mapped_column(String(16))
    items: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)

    def release(self) -> None:
        if self.status != "reserved":
            return
        self.status = "released"
        lines = [Line(sku=sku, quantity=q) for sku, q in self.items.items()]
        self.domain_event(StockReleased(order_id=self.id, lines=lines))


class ReceiveStock(Command):
    sku: Sku
    quantity: Quantity


class ReserveStock(Command):
    order_id: uuid.UUID
    lines: list[Line]
    total: Decimal


class ReleaseStock(Command):
    order_id: uuid.UUID


store = Module("store")


@store.handles(ReceiveStock)
async def receive_stock(cmd: ReceiveStock, stock: Repository[Stock]) -> int:
    item = await stock.find(cmd.sku)
    if item is None:
        item = Stock(id=cmd.sku, on_hand=0)
        stock.add(item)
    item.receive(cmd.quantity)
    return item.on_hand


@store.handles(ReserveStock)
async def reserve_stock(
    cmd: ReserveStock, stock: Repository[Stock], reservations: Repository[Reservation]
) -> str:
    known = await reservations.find(cmd.order_id)
    if known is not None:
        return known.status  # answered before (or the order was cancelled first)
    items = {line.sku: await stock.find(line.sku) for line in cmd.lines}
    missing = [
        line.sku
        for line in cmd.lines
        if (item := items[line.sku]) is None or not item.can_take(line.quantity)
    ]
    reservation = Reservation(id=cmd.order_id, items={ln.sku: ln.quantity for ln in cmd.lines})
    reservations.add(reservation)
    if missing:
        reservation.status = "rejected"
        reason = "out of stock: " + ", ".join(missing)
        reservation.domain_event(OrderRejected(order_id=cmd.order_id, reason=reason))
        return "rejected"
    for line in cmd.lines:
        item = items[line.sku]
        assert item is not None  # checked in `missing`
        item.take(line.quantity)
    reservation.status = "reserved"
    reservation.domain_event(StockReserved(order_id=cmd.order_id, lines=cmd.lines, total=cmd.total))
    return "reserved"


@store.handles(ReleaseStock)
async def release_stock(
    cmd: ReleaseStock, stock: Repository[Stock], reservations: Repository[Reservation]
) -> str:
    reservation = await reservations.find(cmd.order_id)
    if reservation is None:
        reservations.add(Reservation(id=cmd.order_id, status="cancelled", items={}))
        return "cancelled"
    if reservation.status == "reserved":
        for sku, quantity in reservation.items.items():
            (await stock.get(sku)).put_back(quantity)
        reservation.release()
    return reservation.status
