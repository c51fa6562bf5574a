"""Poison on the buses that read the outbox themselves (database, in-process): undecodable rows,
payloads that are not JSON or do not validate, and names a subscription is not bound to are
dead-lettered at once with the reason; the aggregate's later events wait under
``block_aggregate`` and flow under ``continue``; everything else flows (issue 11, defects 3, 4).
"""

from __future__ import annotations

import pytest

from dddframe import Application
from dddframe.bus.database import DatabaseBus
from dddframe.bus.inprocess import InProcessBus
from dddframe.bus.protocol import EventBus
from dddframe.testing import reset_database
from tests.core.poison_rows import (
    CLOSED,
    Seen,
    _row,
    expected_calls,
    expected_dead,
    hostile_rows,
    insert_rows,
    per_aggregate,
    poison_modules,
    total,
)


@pytest.mark.parametrize("bus_kind", ["database", "inprocess"])
async def test_poison_is_dead_lettered_at_once_and_holds_only_its_aggregate(
    any_db: str, bus_kind: str
) -> None:
    await reset_database(any_db)
    Seen.reset()
    bus: EventBus = (
        DatabaseBus(run_interval=0.05)
        if bus_kind == "database"
        else InProcessBus(poll_interval=0.05)
    )
    async with Application(poison_modules(), any_db, bus=bus) as app:
        await app.create_schema()
        rows = hostile_rows()
        mariadb = app.database.dialect == "mysql"
        # MariaDB compares names case-insensitively, so this unknown name reaches the
        # subscription bound to two names (it used to raise KeyError there and block it).
        rows.insert(0, _row("unknown-name", 1, "{}", name=CLOSED.lower()))
        then: tuple[str, ...] = ()
        sqlite = app.database.dialect == "sqlite"
        if sqlite:  # only SQLite lets a timestamp column hold text that is not one
            rows[1:1] = [_row("bad-time", 1, '{"n": 1}'), _row("bad-time", 2, '{"n": 2}')]
            then = (
                "UPDATE dddframe_outbox SET occurred_at = 'garbage <b>' "
                "WHERE aggregate_id = 'bad-time' AND aggregate_version = 1",
            )
        await insert_rows(app, rows, then=then)
        for sub in ("blocking", "flowing", "both"):
            await Seen.wait_for(sub, total(sub) + (sqlite and sub == "flowing"))
        await app.drain()
        for sub in ("blocking", "flowing", "both"):
            expected = expected_calls()[sub]
            if sqlite and sub == "flowing":
                expected["bad-time"] = [2]
            assert per_aggregate(Seen.calls[sub]) == expected, sub
            name = f"poison.Sink.{sub}"
            dead = await app.dead_letters.list(subscription=name)
            want = expected_dead(sub)
            if mariadb and sub == "both":
                want["unknown-name"] = "is bound to"
            if sqlite:
                want["bad-time"] = "is not a timestamp"
            assert {d.envelope.aggregate_id: d.attempts for d in dead} == dict.fromkeys(want, 1), (
                sub
            )
            for d in dead:
                assert want[str(d.envelope.aggregate_id)] in (d.error or ""), (sub, d.error)
            waiting = await app.dead_letters.list(subscription=name, state="waiting")
            held = sorted(str(w.envelope.aggregate_id) for w in waiting)
            later = sorted(a for a in want if a != "unknown-name")  # it has no later event
            assert held == (later if sub != "flowing" else []), sub
