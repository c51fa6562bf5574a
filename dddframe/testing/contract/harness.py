"""What a transport provides so that the contract scenarios can run against it.

A harness builds running applications on the transport (fresh, or restarted on the state an
earlier one left), shows and replays its dead letters, and, where the transport can have them,
puts damaged records where a subscription reads and drops its broker connections.
:class:`OutboxHarness` does all of that for transports that deliver straight from the outbox
(the in-process and database buses); a broker transport overrides ``inject_poison`` and
``drop_connections``.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from sqlalchemy import func, insert, select, text

from dddframe.app import Application, Module
from dddframe.bus.protocol import EventBus
from dddframe.bus.retry import RetryPolicy, as_retry_policy
from dddframe.domain.envelope import Envelope
from dddframe.outbox.records import envelope_to_row
from dddframe.outbox.tables import outbox_table
from dddframe.testing.plugin import reset_database

__all__ = [
    "POISON_KINDS",
    "DeadLetterView",
    "NotSupportedHere",
    "OutboxHarness",
    "PoisonKind",
    "TransportHarness",
    "damaged_row",
]

PoisonKind = Literal[
    "not_json", "no_envelope", "unknown_name", "validation_failure", "undecodable_header"
]
POISON_KINDS: tuple[PoisonKind, ...] = (
    "not_json",
    "no_envelope",
    "unknown_name",
    "validation_failure",
    "undecodable_header",
)
UNKNOWN_NAME = "Conformance:NeverDeclared"


class NotSupportedHere(Exception):
    """Raised by a harness for a fault its transport cannot have; the scenario is skipped."""


@dataclass(frozen=True, slots=True)
class DeadLetterView:
    """A dead letter as the scenarios see it, whatever the transport stores."""

    event_id: str
    name: str
    reason: str
    aggregate_id: str | None
    ref: Any  # what replay() needs
    subscription: str = ""


class TransportHarness(ABC):
    """Implement this (one instance per test) to run the contract scenarios on a transport.

    ``name`` labels the transport in reports; ``database_url`` is the outbox database the
    applications use (a fresh one per test, or one the harness resets). ``selects_by_name`` is
    True for transports that read records by event name (an outbox filtered by the names a
    subscription listens to): a record with an unknown name never reaches a subscription there.
    ``shares_work`` is False for transports that allow one consuming process per database.
    """

    name: ClassVar[str] = "transport"
    selects_by_name: ClassVar[bool] = False
    shares_work: ClassVar[bool] = True

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.starts = 0

    @abstractmethod
    def bus(self, retry: RetryPolicy) -> EventBus:
        """A new bus for one application: fast polling, short leases, ``retry`` as default.

        ``self.starts`` counts the applications started so far in this test (1 for the first):
        state the transport keeps outside the database (queues, topics) must be reset on the
        first start only, so that a restart finds what the earlier application left.
        """

    @asynccontextmanager
    async def running(
        self,
        modules: Sequence[Module],
        retry: RetryPolicy | Callable[[int], float | None],
        *,
        fresh: bool = True,
        consume: bool = True,
    ) -> AsyncIterator[Application]:
        """A started application with the schema created; ``fresh=False`` keeps the state of
        the previous application of this test (a restart)."""
        if fresh:
            await reset_database(self.database_url)
        self.starts += 1
        app = Application(
            modules=modules,
            database_url=self.database_url,
            bus=self.bus(as_retry_policy(retry)),
            consume=consume,
        )
        await app.start()
        try:
            await app.create_schema()
            yield app
        finally:
            await app.stop()

    async def dead_letters(self, app: Application) -> list[DeadLetterView]:
        """The dead letters of every subscription, oldest first."""
        return [
            DeadLetterView(
                event_id=d.event_id,
                name=d.name,
                reason=d.error or "",
                aggregate_id=_aggregate_id(d),
                ref=d.id,
                subscription=d.subscription,
            )
            for d in await app.dead_letters.list()
        ]

    async def wait_for_dead_letters(
        self, app: Application, count: int, *, timeout: float = 30.0
    ) -> list[DeadLetterView]:
        """Poll :meth:`dead_letters` until there are at least ``count``; return them."""
        async with asyncio.timeout(timeout):
            while True:
                letters = await self.dead_letters(app)
                if len(letters) >= count:
                    return letters
                await asyncio.sleep(0.05)

    async def replay(self, app: Application, letters: Sequence[DeadLetterView]) -> None:
        """Send these dead letters back to their subscriptions."""
        await app.dead_letters.replay([d.ref for d in letters])

    async def inject_poison(self, app: Application, kind: PoisonKind, envelope: Envelope) -> None:
        """Put a damaged version of ``envelope`` (see :func:`damaged_row` for the damage of
        each kind) where the subscriptions of ``envelope.name`` read, bypassing the outbox
        checks, as a foreign producer, an old version or a corrupted store would."""
        raise NotSupportedHere(f"{self.name} cannot inject a {kind} record")

    async def drop_connections(self, app: Application) -> None:
        """Close the application's broker (or database server) connections from outside, as a
        broker restart or a network cut would; the application must reconnect by itself."""
        raise NotSupportedHere(f"{self.name} has no connection to drop")


def _aggregate_id(letter: Any) -> str | None:
    try:
        return letter.envelope.aggregate_id  # type: ignore[no-any-return]
    except Exception:
        key = str(getattr(letter, "ordering_key", "") or "")
        return key.partition(":")[2] or key or None


def damaged_row(kind: PoisonKind, envelope: Envelope) -> dict[str, Any]:
    """The outbox row of ``envelope`` with the damage of ``kind``.

    ``not_json``: the payload is not JSON; ``no_envelope``: the event id is not a UUID, so the
    row is no envelope; ``unknown_name``: a name no module declares; ``validation_failure``: JSON
    that does not validate as the event; ``undecodable_header``: the headers cell is not JSON.
    """
    row = envelope_to_row(envelope)
    if kind == "not_json":
        row["payload"] = '{"counter_id": "unterminated'
    elif kind == "no_envelope":
        row["event_id"] = "not-a-uuid:" + str(envelope.event_id)[:20]
    elif kind == "unknown_name":
        row["name"] = UNKNOWN_NAME
    elif kind == "validation_failure":
        row["payload"] = json.dumps({"counter_id": "x", "value": "many", "by": None})
    elif kind == "undecodable_header":
        row["headers"] = '{"x-tenant": <not json>'
    else:  # pragma: no cover - PoisonKind is closed
        raise ValueError(f"unknown poison kind {kind!r}; one of {POISON_KINDS}")
    return row


class OutboxHarness(TransportHarness):
    """A harness for transports whose subscriptions read the outbox table directly."""

    selects_by_name = True

    async def inject_poison(self, app: Application, kind: PoisonKind, envelope: Envelope) -> None:
        async with app.database.engine.begin() as conn:
            await conn.execute(insert(outbox_table), [damaged_row(kind, envelope)])
        app.bus.notify([envelope])

    async def drop_connections(self, app: Application) -> None:
        await drop_database_connections(app)


async def drop_database_connections(app: Application) -> None:
    """Terminate, on the server, every other session of the application's database (PostgreSQL
    and MariaDB); SQLite has no server, so there is nothing to drop."""
    dialect = app.database.engine.dialect.name
    async with app.database.engine.connect() as conn:
        if dialect == "postgresql":
            await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        elif dialect in ("mysql", "mariadb"):
            rows = await conn.execute(
                text(
                    "SELECT id FROM information_schema.processlist "
                    "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
                )
            )
            for (pid,) in rows.all():
                await conn.execute(text(f"KILL CONNECTION {int(pid)}"))
        else:
            raise NotSupportedHere(f"{dialect} has no server connection to drop")
    await app.database.engine.dispose()  # this one too: the pool must reconnect


async def outbox_rows(app: Application, *, aggregate_id: object | None = None) -> int:
    """How many outbox rows the database holds (for one aggregate, or all)."""
    query = select(func.count()).select_from(outbox_table)
    if aggregate_id is not None:
        query = query.where(outbox_table.c.aggregate_id == str(aggregate_id))
    async with app.database.engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())
