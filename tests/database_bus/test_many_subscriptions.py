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
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.pool import Pool, QueuePool

from dddframe import Application, Envelope, Module
from dddframe.bus.database import DatabaseBus
from tests.database_bus.backlog import Listener, all_at, fill_outbox, listeners_module
from tests.services import database_url

SUBSCRIPTIONS = 50
EVENTS = 1000


class Seen:
    count: Counter[str] = Counter()


def _counts(name: str) -> Listener:
    async def on_event(self: Any, event: Envelope) -> None:
        Seen.count[name] += 1

    return on_event


def many_module() -> Module:
    return listeners_module("many", "Many:Happened", "Many", SUBSCRIPTIONS, _counts)


async def _fill(url: str) -> None:
    await fill_outbox(
        url,
        (
            Envelope.new(
                "Many:Happened",
                "{}",
                aggregate_type="Thing",
                aggregate_id=f"a{i % 20}",
                aggregate_version=i // 20 + 1,
            )
            for i in range(EVENTS)
        ),
    )


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
                while not await all_at(app, SUBSCRIPTIONS, EVENTS):
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
