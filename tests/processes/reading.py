"""What the process-manager tests read back: effects, instances, outbox rows, and waiting for a
condition (shared by the tests on every bus)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

from sqlalchemy import select

from dddframe import Application, Envelope
from dddframe.outbox.records import row_to_envelope
from dddframe.outbox.tables import outbox_table
from tests.processes.model import Effect, Fulfilment


async def read_effects(app: Application) -> Counter[tuple[str, str]]:
    """How many times each (what, order_id) command took effect."""
    async with app.database.session() as s:
        rows = (await s.execute(select(Effect.what, Effect.order_id))).all()
    return Counter((what, order_id) for what, order_id in rows)


async def has_effect(app: Application, effect: tuple[str, str]) -> bool:
    return effect in await read_effects(app)


async def read_instance(app: Application, key: str) -> Fulfilment | None:
    async with app.database.session() as s:
        return await s.get(Fulfilment, key)


async def read_outbox(app: Application, name: str) -> list[Envelope]:
    """The outbox's events called ``name``, in the order they were written."""
    async with app.database.connect() as conn:
        rows = await conn.execute(
            select(outbox_table).where(outbox_table.c.name == name).order_by(outbox_table.c.id)
        )
        return [row_to_envelope(r._mapping) for r in rows]


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.05)
