"""Gap-free commit ordering for the outbox (eventx's sequencer, made safe across processes).

Writers insert rows with ``position`` NULL. After commit, :meth:`Sequencer.sequence` gives every
committed, ready row the next position, in ``id`` order, in one short transaction that first locks
the ``sequencer`` lease row. Because sequencing transactions are serialised by that row lock and a
row only gets a position once its own transaction is visible, readers that read ``position > last``
never skip a late-committing row and never see a rolled-back one (the sequence-gap problem that an
``id > last`` reader has). Any process may call it: the lock elects one at a time, so there is no
lease to expire and no fail-over delay. See docs/adr/0001-gap-free-outbox-ordering.md.

On PostgreSQL the same steps run as one call of the ``dddframe_sequence`` function that
``create_schema`` installs (one round trip instead of five: this sits between every commit and
its listeners); a schema created without it falls back to the statements below.
:meth:`Sequencer.sequence_and_read` goes one step further for delivery loops: one call numbers,
reads the next batch for every caught-up subscription and marks it in flight.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from dddframe.domain.envelope import Envelope
from dddframe.errors import SchemaNotReady
from dddframe.outbox.records import envelope_of
from dddframe.outbox.tables import POSTGRES_FUNCTIONS, leases_table

__all__ = ["SEQUENCER_LEASE", "Sequencer", "SharedRead", "installed_functions"]

SEQUENCER_LEASE = "dddframe.sequencer"

_ASSIGN = {
    # Each statement numbers up to :n unsequenced ready rows in id order after :base.
    "postgresql": """
        UPDATE dddframe_outbox AS o SET position = s.base + s.rn
        FROM (SELECT id, CAST(:base AS BIGINT) AS base, row_number() OVER (ORDER BY id) AS rn
              FROM dddframe_outbox WHERE position IS NULL AND status = 0
              ORDER BY id LIMIT :n) AS s
        WHERE o.id = s.id""",
    "sqlite": """
        UPDATE dddframe_outbox SET position = :base + s.rn
        FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn
              FROM dddframe_outbox WHERE position IS NULL AND status = 0
              ORDER BY id LIMIT :n) AS s
        WHERE dddframe_outbox.id = s.id""",
}

# MariaDB/MySQL: an UPDATE that reads the candidates itself takes locking reads, so it waits on
# a writer's uncommitted row while holding index gap locks that writer then needs: a deadlock.
# Reading the ids with a plain (non-locking, READ COMMITTED) SELECT first means the UPDATE only
# touches committed rows that nobody else may change (we hold the sequencer lock) and never
# waits on a writer.
_MYSQL_CANDIDATES = """
    SELECT id FROM dddframe_outbox WHERE position IS NULL AND status = 0 ORDER BY id LIMIT :n"""
_MYSQL_NUMBER = """
    UPDATE dddframe_outbox SET position = (@dddframe_position := @dddframe_position + 1)
    WHERE id IN :ids ORDER BY id"""


@asynccontextmanager
async def _autocommit(conn: AsyncConnection) -> AsyncIterator[None]:
    """Run each statement as its own transaction: no BEGIN/COMMIT round trips. Afterwards the
    rollback only ends SQLAlchemy's bookkeeping (every call committed on its own), so the
    caller gets the connection back in its usual mode."""
    await conn.execution_options(isolation_level="AUTOCOMMIT")
    try:
        yield
    finally:
        await conn.rollback()
        await conn.execution_options(isolation_level=conn.default_isolation_level)


async def installed_functions(conn: AsyncConnection) -> set[str]:
    """Which of the PostgreSQL server functions create_schema installs are there (a schema
    from an older version, or made by hand, may lack some)."""
    found = await conn.execute(
        text("SELECT proname FROM pg_proc WHERE proname IN :names").bindparams(
            bindparam("names", expanding=True)
        ),
        {"names": list(POSTGRES_FUNCTIONS)},
    )
    return set(found.scalars())


_SEQUENCE_READ = text(
    "SELECT * FROM dddframe_sequence_read(:batch, :after, :limit, CAST(:subs AS jsonb)) "
    "ORDER BY r_position NULLS FIRST"
)


@dataclass(frozen=True)
class SharedRead:
    """One batch read for ``subscriptions``, all at position ``after``.

    ``envelopes`` are all events in ``(after, upto]`` in position order; ``marked`` the
    subscriptions that had events among them and are now marked in flight with their position
    stored as ``after`` (what :meth:`PositionStore.advance_and_mark` does for one).
    ``complete`` is true when ``upto`` is the head (the batch was not cut by the limit).
    """

    after: int
    upto: int
    complete: bool
    envelopes: list[Envelope]
    subscriptions: frozenset[str]
    marked: frozenset[str]


class Sequencer:
    """Assigns gap-free positions to committed outbox rows. Safe to call from many processes."""

    def __init__(self, batch_size: int = 5000) -> None:
        self.batch_size = batch_size
        self._server_function: bool | None = None  # PostgreSQL: dddframe_sequence installed?
        self._shared_read_function: bool | None = None  # and dddframe_sequence_read?
        # The highest position assigned as of the last sequence() commit, by any process.
        # Every position up to it is committed, so a reader may read up to it in any snapshot
        # taken after that commit without missing a late row.
        self.head = 0

    @staticmethod
    async def ensure_lease_row(conn: AsyncConnection) -> None:
        exists = await conn.scalar(
            select(leases_table.c.name).where(leases_table.c.name == SEQUENCER_LEASE)
        )
        if exists is None:
            try:
                async with conn.begin_nested():
                    await conn.execute(insert(leases_table).values(name=SEQUENCER_LEASE, value=0))
            except IntegrityError:
                pass  # another process created it first

    @staticmethod
    async def _lock(conn: AsyncConnection, dialect: str) -> int | None:
        """Lock the sequencer row and return the last assigned position.

        Taking the row lock first serialises sequencers on every dialect; the rows to number
        are read by a later statement, so they are seen as of after the lock was granted.
        """
        row = leases_table.c.name == SEQUENCER_LEASE
        if dialect == "postgresql":
            return await conn.scalar(select(leases_table.c.value).where(row).with_for_update())
        # SQLite has no FOR UPDATE: the UPDATE takes its write lock. MariaDB: same shape.
        await conn.execute(update(leases_table).where(row).values(value=leases_table.c.value))
        return await conn.scalar(select(leases_table.c.value).where(row))

    async def sequence(self, conn: AsyncConnection) -> int:
        """Number the committed unsequenced rows; returns how many got a position.

        ``conn`` must not be in a transaction; this runs and commits its own.
        """
        dialect = conn.dialect.name
        if dialect == "postgresql" and self._server_function is not False:
            total = await self._sequence_on_server(conn)
            if total is not None:
                return total
        if dialect in ("mysql", "mariadb"):
            # REPEATABLE READ would take gap locks on the unsequenced range and deadlock with
            # writers inserting into it; READ COMMITTED locks only the rows it numbers.
            await conn.execution_options(isolation_level="READ COMMITTED")
        mysql = dialect in ("mysql", "mariadb")
        statement = None if mysql else text(_ASSIGN[dialect])
        total = 0
        deadlocks = 0
        while True:
            try:
                count = await self._assign(conn, dialect, statement)
            except OperationalError as exc:
                # A deadlock victim is rolled back whole: numbering it again is safe.
                code = getattr(exc.orig, "args", (None,))[0]
                if code != 1213 or deadlocks >= 5:
                    raise
                deadlocks += 1
                continue
            total += count
            if count < self.batch_size:
                return total

    async def sequence_and_read(
        self,
        conn: AsyncConnection,
        *,
        after: int,
        limit: int,
        subscriptions: Mapping[str, Collection[str]],
    ) -> SharedRead | None:
        """Sequence, then read up to ``limit`` events after ``after`` and mark in flight each of
        ``subscriptions`` (name -> event names, all at position ``after``) that has events
        among them: one round trip from a wake-up to the listeners instead of one for the
        sequencer plus a read and a mark per subscription.

        PostgreSQL with the ``dddframe_sequence_read`` function only; None otherwise (call
        :meth:`sequence` and read per subscription). ``conn`` must not be in a transaction.
        """
        if conn.dialect.name != "postgresql" or self._shared_read_function is False:
            return None
        async with _autocommit(conn):
            if self._shared_read_function is None:
                functions = await installed_functions(conn)
                self._shared_read_function = "dddframe_sequence_read" in functions
            if not self._shared_read_function:
                return None
            subs = json.dumps({name: sorted(names) for name, names in subscriptions.items()})
            params = {"batch": self.batch_size, "after": after, "limit": limit, "subs": subs}
            rows = (await conn.execute(_SEQUENCE_READ, params)).all()
        header, found_rows = rows[0]._mapping, rows[1:]
        head = self.head = int(header["r_head"])
        if header["r_assigned"] >= self.batch_size:
            await self.sequence(conn)  # more were waiting: number them too (head moves on)
        # Columns 3.. are r_position .. r_headers, in the order of envelope_of's parameters.
        envelopes = [envelope_of(*row[3:]) for row in found_rows]
        full = len(envelopes) == limit
        upto = int(found_rows[-1][3]) if full else max(head, after)
        return SharedRead(
            after=after,
            upto=upto,
            complete=upto >= self.head,
            envelopes=envelopes,
            subscriptions=frozenset(subscriptions),
            marked=frozenset(header["r_marked"] or ()),
        )

    async def _sequence_on_server(self, conn: AsyncConnection) -> int | None:
        """Call ``dddframe_sequence`` until caught up; None when it is not installed."""
        async with _autocommit(conn):
            if self._server_function is None:
                self._server_function = "dddframe_sequence" in await installed_functions(conn)
            if not self._server_function:
                return None
            total = 0
            while True:
                head, count = (
                    await conn.execute(
                        text("SELECT head, assigned FROM dddframe_sequence(:n)"),
                        {"n": self.batch_size},
                    )
                ).one()
                self.head = int(head)
                total += int(count)
                if count < self.batch_size:
                    return total

    async def _assign(self, conn: AsyncConnection, dialect: str, statement: Any) -> int:
        async with conn.begin():
            base = await self._lock(conn, dialect)
            if base is None:
                raise SchemaNotReady("dddframe_leases has no sequencer row: run create_schema()")
            if statement is None:
                count = await self._assign_mysql(conn, base)
            else:
                result = await conn.execute(statement, {"base": base, "n": self.batch_size})
                count = int(result.rowcount or 0)
            if count:
                await conn.execute(
                    update(leases_table)
                    .where(leases_table.c.name == SEQUENCER_LEASE)
                    .values(value=base + count)
                )
        self.head = int(base) + count
        return count

    async def _assign_mysql(self, conn: AsyncConnection, base: int) -> int:
        candidates = await conn.execute(text(_MYSQL_CANDIDATES), {"n": self.batch_size})
        ids = list(candidates.scalars())
        if not ids:
            return 0
        await conn.execute(text("SET @dddframe_position := :base"), {"base": base})
        number = text(_MYSQL_NUMBER).bindparams(bindparam("ids", expanding=True))
        result = await conn.execute(number, {"ids": ids})
        return int(result.rowcount or 0)
