"""What operators ask of a running system: how far behind is each subscription and relay?

Pure reads of the framework tables, shared by ``dddframe status`` and the status page
(:mod:`dddframe.integrations.status_page`). Rows of ``dddframe_positions`` named ``relay.*`` are
relays (outbox -> broker); every other row is a subscription.

>>> import asyncio
>>> from sqlalchemy.ext.asyncio import create_async_engine
>>> from dddframe.outbox.tables import framework_metadata
>>> async def main() -> SystemStatus:
...     engine = create_async_engine("sqlite+aiosqlite://")
...     async with engine.connect() as conn:
...         await conn.run_sync(framework_metadata.create_all)
...         status = await read_status(conn, {"shop.Mailer.on_placed": None})
...     await engine.dispose()
...     return status
>>> s = asyncio.run(main())
>>> s.head, [(x.name, x.position, x.lag_events) for x in s.subscriptions]
(0, [('shop.Mailer.on_placed', None, 0)])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from dddframe.database import Database
from dddframe.errors import InvalidArgument
from dddframe.outbox.records import as_utc, utcnow
from dddframe.outbox.tables import (
    PARKED_DEAD,
    PARKED_RETRY,
    PARKED_WAITING,
    outbox_table,
    parked_table,
    positions_table,
)

__all__ = [
    "RELAY_PREFIX",
    "RelayStatus",
    "SubscriptionStatus",
    "SystemStatus",
    "age",
    "database_status",
    "read_outbox",
    "read_status",
    "throughput",
]

RELAY_PREFIX = "relay."


class Subscribed(Protocol):
    """What a status needs of a subscription: its name and event names."""

    @property
    def name(self) -> str: ...

    @property
    def event_names(self) -> frozenset[str]: ...


@dataclass(frozen=True, slots=True)
class SubscriptionStatus:
    """One subscription, as every transport reports it (``await bus.status()``).

    ``position``: how far it got, None before it started (the in-process and database buses:
    its outbox position; Kafka: the sum of its consumer group's committed offsets; AMQP: None,
    a queue has no position). ``lag_events``: events it has not handled yet (outbox events
    after its position; records after the committed offsets of its topics; messages ready in
    its queue); ``lag_seconds``: the age of the oldest of them (0 when caught up);
    ``retries_pending``: events waiting for a retry or behind one (parked rows; records in the
    group's retry topic; messages in its delay queues); ``dead_letters``: dead letters stored
    for it (parked rows; the dead-letter topic; its ``.dlq`` queue).
    """

    name: str
    position: int | None
    lag_events: int
    lag_seconds: float
    retries_pending: int
    dead_letters: int
    updated_at: datetime | None

    @property
    def healthy(self) -> bool:
        return self.dead_letters == 0


@dataclass(frozen=True, slots=True)
class RelayStatus:
    """One relay (outbox -> broker): the last position it sent and how far behind it is."""

    name: str
    last_sent: int
    lag_events: int
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class SystemStatus:
    """The whole picture at ``at``: ``head`` is the highest sequenced position, ``unsequenced``
    counts committed rows not numbered yet (the sequencer runs after every commit).
    ``oldest_overdue_schedule`` is the due time of the oldest scheduled command still pending
    (None when none is due; set by ``dddframe status`` from the schedules table);
    ``held_instances`` counts process-manager instances a failed step holds (up to 1,000; set
    by ``dddframe status`` from the process tables)."""

    at: datetime
    head: int
    unsequenced: int
    subscriptions: list[SubscriptionStatus] = field(default_factory=list)
    relays: list[RelayStatus] = field(default_factory=list)
    oldest_overdue_schedule: datetime | None = None
    held_instances: int = 0

    @property
    def dead_letters(self) -> int:
        return sum(s.dead_letters for s in self.subscriptions)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO 8601 strings)."""

        def clean(value: Any) -> Any:
            if isinstance(value, datetime):
                return value.isoformat()
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        data = clean(asdict(self))
        data["dead_letters"] = self.dead_letters
        return data  # type: ignore[no-any-return]


async def _parked_counts(conn: AsyncConnection) -> dict[tuple[str, str], int]:
    q = select(parked_table.c.subscription, parked_table.c.state, func.count()).group_by(
        parked_table.c.subscription, parked_table.c.state
    )
    return {(r[0], r[1]): int(r[2]) for r in (await conn.execute(q)).all()}


async def _lag(
    conn: AsyncConnection, position: int, names: Collection[str] | None
) -> tuple[int, datetime | None]:
    cond = [outbox_table.c.position > position]
    if names is not None:
        cond.append(outbox_table.c.name.in_(list(names)))
    count = int(await conn.scalar(select(func.count()).select_from(outbox_table).where(*cond)) or 0)
    if not count:
        return 0, None
    oldest = await conn.scalar(
        select(outbox_table.c.occurred_at).where(*cond).order_by(outbox_table.c.position).limit(1)
    )
    return count, as_utc(oldest)


async def read_outbox(conn: AsyncConnection) -> SystemStatus:
    """The outbox part of a status, the same on every transport: the head, the committed rows
    not sequenced yet and the relays (``relay.*`` positions); no subscriptions."""
    now = utcnow()
    head = int(await conn.scalar(select(func.max(outbox_table.c.position))) or 0)
    unsequenced = int(
        await conn.scalar(
            select(func.count()).select_from(outbox_table).where(outbox_table.c.position.is_(None))
        )
        or 0
    )
    relays = []
    for name, (position, updated) in (await _positions(conn, relays=True)).items():
        lag, _ = await _lag(conn, position, None)
        relays.append(RelayStatus(name, position, lag, updated))
    return SystemStatus(now, head, unsequenced, [], relays)


async def _positions(
    conn: AsyncConnection, *, relays: bool
) -> dict[str, tuple[int, datetime | None]]:
    """Stored positions of the relays (``relay.*``) or of everything else, by name."""
    name = positions_table.c.subscription
    rows = await conn.execute(
        select(name, positions_table.c.position, positions_table.c.updated_at)
        .where(name.like(RELAY_PREFIX + "%") if relays else name.not_like(RELAY_PREFIX + "%"))
        .order_by(name)
    )
    return {r[0]: (int(r[1]), as_utc(r[2])) for r in rows.all()}


async def read_status(
    conn: AsyncConnection,
    subscriptions: Mapping[str, Collection[str] | None] | None = None,
) -> SystemStatus:
    """The status of subscriptions that keep their position in the outbox (the in-process and
    database buses): positions, lag and parked counts.

    ``subscriptions`` maps the application's subscription names to their event names (None: all
    events), so lag counts only the events a subscription receives and subscriptions that have
    not stored a position yet are listed too. Positions found in the table but not named are
    listed with lag over every event.
    """
    outbox = await read_outbox(conn)
    known = dict(subscriptions or {})
    stored: dict[str, tuple[int | None, datetime | None]] = dict(
        await _positions(conn, relays=False)
    )
    parked = await _parked_counts(conn)
    subs: list[SubscriptionStatus] = []
    for name in sorted(set(stored) | set(known)):
        position, updated = stored.get(name, (None, None))
        lag, oldest = await _lag(conn, position or 0, known.get(name))
        subs.append(
            SubscriptionStatus(
                name=name,
                position=position,
                lag_events=lag,
                lag_seconds=age(outbox.at, oldest),
                retries_pending=parked.get((name, PARKED_RETRY), 0)
                + parked.get((name, PARKED_WAITING), 0),
                dead_letters=parked.get((name, PARKED_DEAD), 0),
                updated_at=updated,
            )
        )
    return dataclasses.replace(outbox, subscriptions=subs)


async def database_status(
    database: Database, subscriptions: Iterable[Subscribed] = ()
) -> SystemStatus:
    """:func:`read_status` on a connection of its own, for the application's subscriptions."""
    async with database.connect() as conn:
        return await read_status(conn, {s.name: s.event_names for s in subscriptions})


def age(now: datetime, oldest: datetime | None) -> float:
    """Seconds from ``oldest`` (naive means UTC, as some drivers return it) to ``now``; 0 when
    there is nothing pending."""
    at = as_utc(oldest)
    return max(0.0, (now - at).total_seconds()) if at is not None else 0.0


async def throughput(
    conn: AsyncConnection, *, minutes: int = 15, now: datetime | None = None
) -> list[tuple[datetime, int]]:
    """Events written to the outbox per minute over the last ``minutes`` (oldest first).

    Buckets start on whole minutes; the last one is the current, partial minute.
    """
    if minutes < 1:
        raise InvalidArgument("minutes must be >= 1")
    end = (now or utcnow()).replace(second=0, microsecond=0)
    start = end - timedelta(minutes=minutes - 1)
    buckets = {start + timedelta(minutes=i): 0 for i in range(minutes)}
    q = select(outbox_table.c.occurred_at).where(outbox_table.c.occurred_at >= start)
    for (occurred,) in (await conn.execute(q)).all():
        at = as_utc(occurred)
        assert at is not None
        key = at.replace(second=0, microsecond=0)
        if key in buckets:
            buckets[key] += 1
    return sorted(buckets.items())
