"""Shipping: ships paid orders, one parcel per order."""

from __future__ import annotations

import uuid

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from dddframe import Aggregate, Command, Module, Repository
from dddframe.errors import DomainError
from example_shop.events import Line, ParcelShipped

__all__ = ["Parcel", "ShipOrder", "ShippingError", "shipping"]


class ShippingError(DomainError):
    """A parcel needs at least one item."""

    http_status = 422


class Parcel(Aggregate):
    """The parcel of one paid order (id = the order's id)."""

    __tablename__ = "shop_parcels"
    items: Mapped[int] = mapped_column(Integer)
    tracking: Mapped[str] = mapped_column(String(64))

    @classmethod
    def ship(cls, order_id: uuid.UUID, lines: list[Line]) -> Parcel:
        items = sum(line.quantity for line in lines)
        if items < 1:
            raise ShippingError(f"order {order_id}: nothing to ship")
        parcel = cls(id=order_id, items=items, tracking=f"TRK-{order_id.hex[-12:].upper()}")
        parcel.domain_event(ParcelShipped(order_id=order_id, tracking=parcel.tracking))
        return parcel


class ShipOrder(Command):
    order_id: uuid.UUID
    lines: list[Line]


shipping = Module("shipping")


@shipping.handles(ShipOrder)
async def ship_order(cmd: ShipOrder, parcels: Repository[Parcel]) -> str:
    known = await parcels.find(cmd.order_id)
    if known is not None:
        return known.tracking
    parcel = Parcel.ship(cmd.order_id, cmd.lines)
    parcels.add(parcel)
    return parcel.tracking
