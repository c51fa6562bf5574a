"""A small projection for the projection tests: orders (one row each, with their line count and
total) and a one-row grand total, built from direct messages keyed by order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, func, select

from dddframe import Application, Envelope, Module, Projection, ProjectionView
from dddframe.outbox.records import row_to_envelope
from dddframe.outbox.tables import outbox_table

metadata = MetaData()

orders = Table(
    "proj_orders",
    metadata,
    Column("order_id", String(40), primary_key=True),
    Column("lines", Integer, nullable=False),
    Column("total", Integer, nullable=False),
)
grand = Table(
    "proj_grand",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("total", Integer, nullable=False),
    Column("orders", Integer, nullable=False),
)
reference_orders = Table(
    "proj_reference_orders",
    metadata,
    Column("order_id", String(40), primary_key=True),
    Column("lines", Integer, nullable=False),
    Column("total", Integer, nullable=False),
)
reference_grand = Table(
    "proj_reference_grand",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("total", Integer, nullable=False),
    Column("orders", Integer, nullable=False),
)

PLACED = "Proj:Placed"
LINE = "Proj:LineAdded"


class OrderTotals(Projection):
    """One row per order and the grand total, written together in each apply."""

    tables = (orders, grand)

    async def on_placed(self, event: dict[str, Any], view: ProjectionView) -> None:
        o, g = self._tables(view)
        await view.session.execute(o.insert().values(order_id=event["order_id"], lines=0, total=0))
        await self._add_to_grand(view, g, 0, orders=1)

    async def on_line(self, event: dict[str, Any], view: ProjectionView) -> None:
        o, g = self._tables(view)
        await view.session.execute(
            o.update()
            .where(o.c.order_id == event["order_id"])
            .values(lines=o.c.lines + 1, total=o.c.total + event["amount"])
        )
        await self._add_to_grand(view, g, event["amount"], orders=0)

    def _tables(self, view: ProjectionView) -> tuple[Table, Table]:
        declared = type(self).tables
        return view.table(declared[0]), view.table(declared[1])

    async def _add_to_grand(self, view: ProjectionView, g: Table, amount: int, orders: int) -> None:
        done = await view.session.execute(
            g.update()
            .where(g.c.id == 1)
            .values(total=g.c.total + amount, orders=g.c.orders + orders)
        )
        if not done.rowcount:  # type: ignore[attr-defined]
            await view.session.execute(g.insert().values(id=1, total=amount, orders=orders))


class ReferenceTotals(OrderTotals):
    """The same projection, built live from the start and never rebuilt: what a rebuild of
    OrderTotals must equal."""

    tables = (reference_orders, reference_grand)


LISTEN = {PLACED: "on_placed", LINE: "on_line"}


def projection_module(*, reference: bool = True) -> Module:
    m = Module("proj")
    m.event(PLACED, LINE, "Proj:Unrelated")
    m.projection(OrderTotals, listen=LISTEN)
    if reference:
        m.projection(ReferenceTotals, listen=LISTEN)
    return m


async def place(app: Application, order_id: str, lines: list[int]) -> None:
    await app.publish(PLACED, {"order_id": order_id}, key=order_id)
    for amount in lines:
        await app.publish(LINE, {"order_id": order_id, "amount": amount}, key=order_id)


async def contents(app: Application, projection: type[Projection]) -> tuple[list[Any], list[Any]]:
    """The rows of a projection's two tables (active generation), read in one transaction."""
    async with app.projections.read(projection) as view:
        o, g = (view.table(t) for t in projection.tables)
        rows = (await view.session.execute(select(o).order_by(o.c.order_id))).all()
        totals = (await view.session.execute(select(g.c.total, g.c.orders))).all()
        return [tuple(r) for r in rows], [tuple(r) for r in totals]


async def consistent_read(view: ProjectionView, projection: type[Projection]) -> tuple[int, int]:
    """(sum of order totals, grand total) in one statement: equal within one generation."""
    o, g = (view.table(t) for t in projection.tables)
    row = (
        await view.session.execute(
            select(
                select(func.coalesce(func.sum(o.c.total), 0)).scalar_subquery(),
                select(func.coalesce(func.max(g.c.total), 0)).scalar_subquery(),
            )
        )
    ).one()
    return int(row[0]), int(row[1])


async def outbox_envelopes(app: Application) -> list[Envelope]:
    """Every sequenced event in the outbox, in position order."""
    async with app.database.connect() as conn:
        rows = (
            await conn.execute(
                select(outbox_table)
                .where(outbox_table.c.position.is_not(None))
                .order_by(outbox_table.c.position)
            )
        ).mappings()
        return [row_to_envelope(r) for r in rows]


@dataclass
class Flowing:
    """How many orders a :func:`keep_placing` block placed."""

    placed: int = 0


@asynccontextmanager
async def keep_placing(
    place_one: Callable[[int], Awaitable[None]], *, pause: float = 0.0
) -> AsyncIterator[Flowing]:
    """Orders keep being placed (``place_one(0)``, ``place_one(1)``, ...) while the block runs,
    as writes continuing during a rebuild; at its end the writer stops and is waited for."""
    flowing = Flowing()
    stop = asyncio.Event()

    async def write() -> None:
        while not stop.is_set():
            await place_one(flowing.placed)
            flowing.placed += 1
            if pause:
                await asyncio.sleep(pause)

    writer = asyncio.create_task(write())
    try:
        yield flowing
    finally:
        stop.set()
        await writer
