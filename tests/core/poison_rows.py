"""Poison on every transport: the same listeners, the same hostile outbox rows, one expectation.

Three subscriptions of group ``poison``:

* ``poison.Sink.blocking`` (``Opened``, ``block_aggregate``): a poisoned aggregate's later
  events wait behind its dead letter;
* ``poison.Sink.flowing`` (``Opened``, ``continue``): they are delivered;
* ``poison.Sink.both`` (an ``Envelope`` for ``Poison:Opened`` and ``Poison:Closed``, so bound to
  two names): only undecodable rows and unknown names are poison for it.

Each poisoned aggregate gets one bad event (version 1) and then a good one (version 2); the
``ok-*`` aggregates only good ones. Retries are generous (``LimitRetry(limit=3)``), so a dead
letter with ``attempts == 1`` proves poison was not retried.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import insert, text

from dddframe import Application, DomainEvent, Envelope, EventContext, LimitRetry, Module
from dddframe.outbox.records import envelope_to_row
from dddframe.outbox.tables import outbox_table

OPENED, CLOSED = "Poison:Opened", "Poison:Closed"
OK = [f"ok-{i}" for i in range(4)]

# aggregate -> (what is wrong with its first row, reason expected in the dead letter)
ROW_POISON = {
    "bad-headers": ("headers", "headers are not JSON"),
    "bad-id": ("event_id", "is not a UUID"),
    "bad-shape": ("headers-list", "headers are a JSON list"),
}
PAYLOAD_POISON = {  # poison for the typed listeners only
    "not-json": ("payload", "not valid JSON"),
    "invalid": ("validation", "does not validate"),
}


class Opened(DomainEvent):
    __event_name__ = OPENED
    n: int


class Seen:
    calls: dict[str, list[tuple[str, int]]] = defaultdict(list)
    changed = asyncio.Event()

    @classmethod
    def reset(cls) -> None:
        cls.calls = defaultdict(list)
        cls.changed = asyncio.Event()

    @classmethod
    def add(cls, sub: str, aggregate: str | None, version: int | None) -> None:
        cls.calls[sub].append((str(aggregate), int(version or 0)))
        cls.changed.set()

    @classmethod
    async def wait_for(cls, sub: str, count: int, timeout: float = 60) -> None:
        try:
            async with asyncio.timeout(timeout):
                while len(cls.calls[sub]) < count:
                    cls.changed.clear()
                    await cls.changed.wait()
        except TimeoutError:
            raise AssertionError(f"{sub} saw {per_aggregate(cls.calls[sub])}") from None


class Sink:
    async def blocking(self, event: Opened, ctx: EventContext) -> None:
        Seen.add("blocking", ctx.envelope.aggregate_id, ctx.envelope.aggregate_version)

    async def flowing(self, event: Opened, ctx: EventContext) -> None:
        Seen.add("flowing", ctx.envelope.aggregate_id, ctx.envelope.aggregate_version)

    async def both(self, event: Envelope) -> None:
        Seen.add("both", event.aggregate_id, event.aggregate_version)


def poison_modules(**both_options: Any) -> list[Module]:
    m = Module("poison")
    m.event(CLOSED)
    m.controller(Sink)
    retry = LimitRetry(limit=3, delay=0.01)
    m.listen(OPENED, "Sink.blocking", retry=retry)
    m.listen(OPENED, "Sink.flowing", retry=retry, dead_letter="continue")
    m.listen(OPENED, "Sink.both", retry=retry, **both_options)
    m.listen(CLOSED, "Sink.both", retry=retry, **both_options)
    return [m]


def _row(aggregate: str, version: int, payload: str, name: str = OPENED) -> dict[str, Any]:
    env = Envelope.new(
        name, payload, aggregate_type="Box", aggregate_id=aggregate, aggregate_version=version
    )
    return envelope_to_row(env)


def hostile_rows() -> list[dict[str, Any]]:
    """The rows to insert, in order: every poisoned aggregate's bad row, then good rows."""
    rows: list[dict[str, Any]] = []
    for aggregate, (what, _) in {**ROW_POISON, **PAYLOAD_POISON}.items():
        row = _row(aggregate, 1, json.dumps({"n": 1}))
        if what == "headers":
            row["headers"] = '{"correlation_id": "c-1", <script>\x07'
        elif what == "headers-list":
            row["headers"] = '["a", "b"]'
        elif what == "event_id":
            row["event_id"] = "not-a-uuid\x1b[31m"[:36]
        elif what == "payload":
            row["payload"] = "{not json"
        elif what == "validation":
            row["payload"] = json.dumps({"n": "many"})
        rows.append(row)
    for aggregate in [*ROW_POISON, *PAYLOAD_POISON]:
        rows.append(_row(aggregate, 2, json.dumps({"n": 2})))
    for version in (1, 2, 3):
        for aggregate in OK:
            rows.append(_row(aggregate, version, json.dumps({"n": version})))
    return rows


async def insert_rows(
    app: Application, rows: list[dict[str, Any]], *, then: tuple[str, ...] = ()
) -> None:
    """Insert the rows, then run the ``then`` statements, in one transaction."""
    async with app.database.connect() as conn:
        for row in rows:
            await conn.execute(insert(outbox_table).values(**row))
        for statement in then:
            await conn.execute(text(statement))
        await conn.commit()
    app.bus.notify([])


def refused_rows(refused: Mapping[str, Callable[[dict[str, Any]], None]]) -> list[dict[str, Any]]:
    """Rows a broker refuses as they are (a topic, routing key, header or size it cannot
    take): for each aggregate, its first row changed by the function, then a good row. The
    relay sends such a row as poison, so every subscription of its name dead-letters it."""
    rows: list[dict[str, Any]] = []
    for aggregate, spoil in refused.items():
        row = _row(aggregate, 1, json.dumps({"n": 1}))
        spoil(row)
        rows.append(row)
    rows.extend(_row(aggregate, 2, json.dumps({"n": 2})) for aggregate in refused)
    return rows


def expected_calls(refused: Iterable[str] = ()) -> dict[str, dict[str, list[int]]]:
    """What each subscription's listener must have seen: aggregate -> versions, in order
    (``refused``: the aggregates of :func:`refused_rows`, poison like an undecodable row)."""
    ok = {a: [1, 2, 3] for a in OK}
    poisoned_later = {a: [2] for a in [*ROW_POISON, *PAYLOAD_POISON, *refused]}
    return {
        "blocking": dict(ok),
        "flowing": {**ok, **poisoned_later},
        "both": {**ok, **{a: [1, 2] for a in PAYLOAD_POISON}},  # block_aggregate too
    }


def per_aggregate(calls: list[tuple[str, int]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for aggregate, version in calls:
        out[aggregate].append(version)
    return dict(out)


def expected_dead(sub: str, refused: Mapping[str, str] | None = None) -> dict[str, str]:
    """aggregate -> a text its dead letter's reason contains (``refused``: aggregate -> the
    reason of its refused row)."""
    dead = {a: reason for a, (_, reason) in ROW_POISON.items()}
    dead.update(refused or {})
    if sub != "both":
        dead.update({a: reason for a, (_, reason) in PAYLOAD_POISON.items()})
    return dead


def total(sub: str, refused: Iterable[str] = ()) -> int:
    return sum(len(v) for v in expected_calls(refused)[sub].values())
