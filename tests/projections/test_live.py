"""Live projections on SQLite, PostgreSQL and MariaDB: each event applied exactly once (a
redelivery changes nothing), the checkpoint and the lag in the status, the tables dropped with
the schema."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from dddframe.bus.database import DatabaseBus
from dddframe.domain.envelope import Envelope
from dddframe.outbox.tables import framework_metadata
from tests.projections.conftest import AppFactory
from tests.projections.model import (
    LINE,
    OrderTotals,
    ReferenceTotals,
    contents,
    outbox_envelopes,
    place,
    projection_module,
)


async def test_each_event_is_applied_once_when_redelivered(
    any_db: str, make_app: AppFactory
) -> None:
    async with make_app(any_db, [projection_module(reference=False)]) as app:
        await place(app, "o1", [5, 7])
        await app.drain()
        assert await contents(app, OrderTotals) == ([("o1", 2, 12)], [(12, 1)])
        sub = next(s for s in app.subscriptions if s.listener == "OrderTotals")
        envelopes = await outbox_envelopes(app)
        line = next(e for e in envelopes if e.name == LINE)
        for attempt in (2, 3):  # at-least-once buses deliver again after a lost ack
            await sub.deliver(line, attempt, sub)
        assert await contents(app, OrderTotals) == ([("o1", 2, 12)], [(12, 1)])
        # A failing handler rolls back its writes, its inbox entry and its checkpoint together.
        broken = Envelope.new(LINE, '{"order_id": "o1"}', aggregate_id="o1").with_position(999)
        with pytest.raises(KeyError):
            await sub.deliver(broken, 1, sub)
        assert await contents(app, OrderTotals) == ([("o1", 2, 12)], [(12, 1)])
        status = (await app.projections.status())[0]
        assert status.position == envelopes[-1].position and status.lag_events == 0


async def test_status_shows_the_lag_in_events_and_seconds(
    any_db: str, make_app: AppFactory
) -> None:
    async with make_app(any_db, [projection_module(reference=False)], groups=["other"]) as app:
        await place(app, "o1", [1, 2, 3])
        await app.publish("Proj:Unrelated", {"x": 1})  # not bound: not lag
        await app.drain()
        (status,) = await app.projections.status()
        assert (status.name, status.generation, status.position) == ("OrderTotals", 1, 0)
        assert status.lag_events == 4 and status.lag_seconds >= 0 and status.head == 5
        assert status.rebuild is None
    async with make_app(any_db, [projection_module(reference=False)], reset=False) as app:
        await app.drain()
        (status,) = await app.projections.status()
        assert (status.position, status.lag_events, status.lag_seconds) == (4, 0, 0.0)
        assert status.last_event_at is not None
        await app.drop_schema()
        async with app.database.connect() as conn:
            left = await conn.run_sync(lambda c: inspect(c).get_table_names())
        assert not [t for t in left if t.startswith("proj_") or t in framework_metadata.tables]


async def test_the_database_bus_delivers_projections_and_rebuilds_match(
    any_db: str, make_app: AppFactory
) -> None:
    """Projections are ordinary subscriptions: the database bus (many workers, lanes per
    aggregate) delivers them, and a rebuild equals the live build."""
    bus = DatabaseBus(run_interval=0.05)
    async with make_app(any_db, [projection_module()], bus=bus) as app:
        for i in range(5):
            await place(app, f"o{i}", [i, 10])
        await app.drain()
        live = await contents(app, OrderTotals)
        assert live == await contents(app, ReferenceTotals)
        assert live[1] == [(sum(range(5)) + 50, 5)]
        assert (await app.projections.rebuild(OrderTotals, batch_size=4)).generation == 2
        await place(app, "after", [1])
        await app.drain()
        assert await contents(app, OrderTotals) == await contents(app, ReferenceTotals)
