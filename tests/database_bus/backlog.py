"""A backlog for the database-bus tests: many subscriptions to one event, an outbox filled in
one statement before any worker starts, and whether every subscription reached the head."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from sqlalchemy import insert, select

from dddframe import Application, Envelope, Module
from dddframe.database import Database
from dddframe.outbox.records import envelope_to_row
from dddframe.outbox.schema import create_schema
from dddframe.outbox.tables import outbox_table, positions_table
from dddframe.testing import reset_database

Listener = Callable[[Any, Envelope], Awaitable[None]]


def listeners_module(
    name: str,
    event: str,
    controller: str,
    count: int,
    listener: Callable[[str], Listener],
    *,
    group: str | None = None,
) -> Module:
    """Module ``name`` with ``count`` subscriptions to ``event``: methods ``on_0 ...`` of a
    controller ``controller``, each made by ``listener(<its subscription name>)``."""
    methods: dict[str, Any] = {}
    for i in range(count):
        method = listener(f"{group or name}.{controller}.on_{i}")
        method.__annotations__ = {"event": Envelope, "return": None}
        methods[f"on_{i}"] = method
    m = Module(name)
    m.event(event)
    m.controller(type(controller, (), methods))
    for i in range(count):
        if group is None:
            m.listen(event, f"{controller}.on_{i}")
        else:
            m.listen(event, f"{controller}.on_{i}", group=group)
    return m


async def fill_outbox(url: str, envelopes: Iterable[Envelope]) -> None:
    """A fresh schema on ``url`` whose outbox holds ``envelopes`` (not yet sequenced)."""
    await reset_database(url)
    db = Database(url)
    try:
        await create_schema(db)
        async with db.connect() as conn:
            await conn.execute(insert(outbox_table), [envelope_to_row(e) for e in envelopes])
            await conn.commit()
    finally:
        await db.dispose()


async def all_at(app: Application, subscriptions: int, head: int) -> bool:
    """Whether ``subscriptions`` positions are stored, each at ``head`` or beyond."""
    async with app.database.connect() as conn:
        rows = (await conn.execute(select(positions_table.c.position))).scalars().all()
    return len(rows) == subscriptions and all(int(p) >= head for p in rows)
