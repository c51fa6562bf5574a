"""A worker with 50 subscriptions drains a backlog without running out of connections.

Each subscription behind the head reads its own batch; all of them wake at once, and the
connections the bus takes for those reads (and for retries, parking, positions) are bounded
by its connection gate, sized from the pool: the pool is never exhausted by the bus alone, so
nothing waits for a connection (SQLAlchemy's ``QueuePool limit ... timed out``), whatever the
number of subscriptions. Checked by counting the checked-out connections with pool events.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, select
from sqlalchemy.pool import Pool, QueuePool

from dddframe import Application, Envelope, Module
from dddframe.bus.database import DatabaseBus
from dddframe.database import Database
from dddframe.outbox.records import envelope_to_row
from dddframe.outbox.schema import create_schema
from dddframe.outbox.tables import outbox_table, positions_table
from dddframe.testing import reset_database
from tests.services import database_url

SUBSCRIPTIONS = 50
EVENTS = 1000


class Seen:
    count: Counter[str] = Counter()


def _listener(name: str) -> Callable[[Any, Envelope], Awaitable[None]]:
    async def on_event(self: Any, event: Envelope) -> None:
        Seen.count[name] += 1

    on_event.__annotations__ = {"event": Envelope, "return": None}
    return on_event


def many_module() -> Module:
    methods = {f"on_{i}": _listener(f"many.Many.on_{i}") for i in range(SUBSCRIPTIONS)}
    m = Module("many")
    m.event("Many:Happened")
    m.controller(type("Many", (), methods))
    for i in range(SUBSCRIPTIONS):
        m.listen("Many:Happened", f"Many.on_{i}")
    return m


async def _fill(url: str) -> None:
    await reset_database(url)
    db = Database(url)
    try:
        await create_schema(db)
        rows = [
            envelope_to_row(
                Envelope.new(
                    "Many:Happened",
                    "{}",
                    aggregate_type="Thing",
                    aggregate_id=f"a{i % 20}",
                    aggregate_version=i // 20 + 1,
                )
            )
            for i in range(EVENTS)
        ]
        async with db.connect() as conn:
            await conn.execute(insert(outbox_table), rows)
            await conn.commit()
    finally:
        await db.dispose()


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
async def test_fifty_subscriptions_drain_a_backlog_without_exhausting_the_pool(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = database_url(kind, tmp_path)
    caplog.set_level(logging.WARNING, logger="dddframe")
    Seen.count = Counter()
    await _fill(url)
    bus = DatabaseBus(limit_per_run=100, run_interval=0.05)
    app = Application([many_module()], url, bus=bus)
    out = [0, 0]  # checked out now, at most

    def checkout(*_: object) -> None:
        out[0] += 1
        out[1] = max(out)

    def checkin(*_: object) -> None:
        out[0] -= 1

    # On the Pool class: the application's pool exists only once it started, and it is the
    # only one open meanwhile.
    event.listen(Pool, "checkout", checkout)
    event.listen(Pool, "checkin", checkin)
    try:
        async with app:
            pool = app.database.engine.sync_engine.pool
            assert isinstance(pool, QueuePool)
            capacity = pool.size() + max(pool._max_overflow, 0)
            async with asyncio.timeout(120):
                while not await _drained(app):
                    await asyncio.sleep(0.05)
    finally:
        event.remove(Pool, "checkout", checkout)
        event.remove(Pool, "checkin", checkin)
    assert all(Seen.count[f"many.Many.on_{i}"] >= EVENTS for i in range(SUBSCRIPTIONS))
    problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert problems == []
    # The bus never took the whole pool: a connection was always free (for the application's
    # own work too), so no checkout waited for one.
    assert out[1] < capacity, (out[1], capacity)


async def _drained(app: Application) -> bool:
    async with app.database.connect() as conn:
        rows = (await conn.execute(select(positions_table.c.position))).scalars().all()
    return len(rows) == SUBSCRIPTIONS and all(int(p) >= EVENTS for p in rows)
