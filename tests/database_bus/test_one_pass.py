"""One pass per subscription at a time: a subscription whose pass raises never makes the others
deliver twice or out of order (issue 11, defect 1).

The fault is real: a trigger makes the database refuse one write of the failing subscription
(its dead-letter write on PostgreSQL and MariaDB, its position on SQLite), so every pass of it
raises.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from sqlalchemy import text

from dddframe import Application, Command, Envelope, LimitRetry, Module
from dddframe.bus.database import DatabaseBus
from dddframe.bus.inprocess import InProcessBus
from dddframe.bus.protocol import EventBus
from dddframe.testing import reset_database

NAME = "OnePass:Happened"
BAD = "onepass.Passes.bad"
KEYS, PER_KEY = 10, 30  # 300 events

_TRIGGERS = {
    # SQLite reports a trigger's RAISE as a constraint violation, which parking takes for "parked
    # already"; so there the failing write is the subscription's position instead.
    "sqlite": [
        f"""CREATE TRIGGER onepass_bad BEFORE UPDATE ON dddframe_positions
        WHEN NEW.subscription = '{BAD}'
        BEGIN SELECT RAISE(ABORT, 'positions are broken for this subscription'); END"""
    ],
    "postgresql": [
        f"""CREATE OR REPLACE FUNCTION onepass_bad() RETURNS trigger AS $$
        BEGIN
            IF NEW.subscription = '{BAD}' THEN
                RAISE EXCEPTION 'parking is broken for this subscription';
            END IF;
            RETURN NEW;
        END $$ LANGUAGE plpgsql""",
        """CREATE TRIGGER onepass_bad BEFORE INSERT ON dddframe_parked
        FOR EACH ROW EXECUTE FUNCTION onepass_bad()""",
    ],
    "mysql": [
        f"""CREATE TRIGGER onepass_bad BEFORE INSERT ON dddframe_parked FOR EACH ROW
        BEGIN
            IF NEW.subscription = '{BAD}' THEN
                SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'parking is broken';
            END IF;
        END"""
    ],
}


class Seen:
    calls: dict[str, list[tuple[str, int]]] = defaultdict(list)


class Passes:
    async def _record(self, sub: str, event: Envelope) -> None:
        Seen.calls[sub].append((str(event.aggregate_id), int(event.payload()["n"])))
        await asyncio.sleep(0.002)  # a pass takes a while, so passes could overlap

    async def bad(self, event: Envelope) -> None:
        await self._record("bad", event)
        if event.aggregate_id == "k0" and event.payload()["n"] == 0:
            raise RuntimeError("the one bad event")

    async def a(self, event: Envelope) -> None:
        await self._record("a", event)

    async def b(self, event: Envelope) -> None:
        await self._record("b", event)

    async def c(self, event: Envelope) -> None:
        await self._record("c", event)


class Burst(Command):
    """Writes the whole backlog in one transaction, so every pass has much to deliver."""


def modules() -> list[Module]:
    m = Module("onepass")
    m.event(NAME)
    m.controller(Passes)

    @m.handles(Burst)
    async def burst(cmd: Burst, app: Application) -> None:
        for n in range(PER_KEY):
            for k in range(KEYS):
                await app.publish(NAME, {"n": n}, key=f"k{k}")

    for method in ("bad", "a", "b", "c"):
        m.listen(NAME, f"Passes.{method}", retry=LimitRetry(limit=0))
    return [m]


@pytest.mark.parametrize("bus_kind", ["database", "inprocess"])
async def test_a_failing_subscription_never_disturbs_the_others(any_db: str, bus_kind: str) -> None:
    await reset_database(any_db)
    Seen.calls = defaultdict(list)
    bus: EventBus = (
        DatabaseBus(run_interval=0.05, limit_per_run=25, concurrency=4)
        if bus_kind == "database"
        else InProcessBus(poll_interval=0.05, batch_size=25, concurrency=4)
    )
    async with Application(modules(), any_db, bus=bus) as app:
        await app.create_schema()
        async with app.database.connect() as conn:
            for statement in _TRIGGERS[app.database.dialect]:
                await conn.execute(text(statement))
            await conn.commit()
        await app.engine.run(Burst())
        async with asyncio.timeout(120):
            while min(len(Seen.calls[s]) for s in "abc") < KEYS * PER_KEY:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # time for any second, overlapping pass to show itself
    expected = {f"k{k}": list(range(PER_KEY)) for k in range(KEYS)}
    for sub in "abc":
        calls = Seen.calls[sub]
        per_key: dict[str, list[int]] = defaultdict(list)
        for key, n in calls:
            per_key[key].append(n)
        assert len(calls) == KEYS * PER_KEY, (sub, len(calls))
        assert per_key == expected, sub
