"""Ordered reads of the outbox by position, and subscription positions."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import Row, case, func, insert, select, type_coerce, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from dddframe.domain.envelope import Envelope
from dddframe.errors import InvalidArgument, PositionExpired
from dddframe.outbox.records import TolerantTimestamp, envelope_of, utcnow
from dddframe.outbox.sequencer import SEQUENCER_LEASE
from dddframe.outbox.tables import leases_table, outbox_table, positions_table

__all__ = ["ROW_FIELDS", "OutboxReader", "PositionStore"]

_COLUMNS = [  # in the order of envelope_of's parameters
    outbox_table.c.position,
    outbox_table.c.event_id,
    outbox_table.c.name,
    outbox_table.c.aggregate_type,
    outbox_table.c.aggregate_id,
    outbox_table.c.aggregate_version,
    outbox_table.c.event_version,
    type_coerce(outbox_table.c.occurred_at, TolerantTimestamp()).label("occurred_at"),
    outbox_table.c.payload,
    outbox_table.c.headers,
]
ROW_FIELDS = tuple(c.name for c in _COLUMNS)
"""The cells of a row from :meth:`OutboxReader.read_rows`, in order (a read without ``head``
has the sequencer's head after them)."""
_HEAD = len(_COLUMNS)


class OutboxReader:
    """Reads sequenced outbox rows in position order.

    A row whose cells cannot be decoded never raises here: it comes back with the reason in
    its ``dddframe-undecodable`` header (:func:`~dddframe.outbox.records.row_to_envelope`), so
    the subscription or relay reading it moves on and the consumer dead-letters it as poison.
    """

    async def read(
        self,
        conn: AsyncConnection,
        *,
        after: int,
        limit: int,
        names: Collection[str] | None = None,
        head: int | None = None,
    ) -> tuple[list[Envelope], int]:
        """Up to ``limit`` envelopes with ``position > after`` (only ``names`` if given), and the
        position read up to: the last row's when the batch is full, else the head.

        One statement returns the rows and the sequencer's head from the same snapshot, so every
        position up to that head is visible to it and nothing in between is skipped. A caller
        that just ran the sequencer passes its ``head`` instead: every position up to it was
        committed before this read began, so the rows alone are enough. (Sequencer commits are
        serialised, so any snapshot sees a prefix of the positions: rows past ``head`` that it
        returns come with everything before them.) No upper bound in the statement: with one,
        planners pick a range scan and sort instead of reading the position index in order.
        """
        rows, upto = await self.read_rows(conn, after=after, limit=limit, names=names, head=head)
        return [envelope_of(*r[:_HEAD]) for r in rows], upto

    async def read_rows(
        self,
        conn: AsyncConnection,
        *,
        after: int,
        limit: int,
        names: Collection[str] | None = None,
        head: int | None = None,
    ) -> tuple[Sequence[Row[Any]], int]:
        """:meth:`read` without decoding: the rows as the database returned them, their cells
        in :data:`ROW_FIELDS` order (``envelope_of(*row[:10])`` is the envelope of one),
        and the position read up to. For a reader that builds its own form of a row (the Kafka
        relay's records) without an envelope in between."""
        if head is not None:
            if head <= after:
                return [], after
            q = select(*_COLUMNS).where(outbox_table.c.position > after)
            if names is not None:
                q = q.where(outbox_table.c.name.in_(list(names)))
            q = q.order_by(outbox_table.c.position).limit(limit)
            found = (await conn.execute(q)).all()
            last = int(found[-1][0]) if found else after
            return found, last if len(found) == limit else max(head, last)
        head_column = (
            select(leases_table.c.value)
            .where(leases_table.c.name == SEQUENCER_LEASE)
            .scalar_subquery()
            .label("head")
        )
        q = select(*_COLUMNS, head_column).where(outbox_table.c.position > after)
        if names is not None:
            q = q.where(outbox_table.c.name.in_(list(names)))
        q = q.order_by(outbox_table.c.position).limit(limit)
        rows = (await conn.execute(q)).all()
        if not rows:
            # The head is read in a later snapshot than the (empty) rows: rows numbered in
            # between must be read now, not skipped by moving past them.
            head_now = await self.head(conn)
            if head_now <= after:
                return [], after
            q = q.where(outbox_table.c.position <= head_now)
            rows = (await conn.execute(q)).all()
            if len(rows) < limit:
                return rows, head_now
        if len(rows) == limit:
            upto = int(rows[-1][0])
        else:
            first_head = rows[0][_HEAD]
            upto = int(first_head if first_head is not None else rows[-1][0])
        return rows, max(upto, after)

    async def head(self, conn: AsyncConnection) -> int:
        """The highest assigned position (0 when nothing was ever sequenced).

        Read from the sequencer's counter, so it stays right after retention emptied the table.
        """
        last = await conn.scalar(
            select(leases_table.c.value).where(leases_table.c.name == SEQUENCER_LEASE)
        )
        if last is not None:
            return int(last)
        return int(await conn.scalar(select(func.max(outbox_table.c.position))) or 0)

    async def tail(self, conn: AsyncConnection) -> int:
        """The lowest position still stored; head + 1 when retention removed everything."""
        lowest = await conn.scalar(select(func.min(outbox_table.c.position)))
        if lowest is not None:
            return int(lowest)
        return await self.head(conn) + 1


class PositionStore:
    """The last fully handled position of each subscription or relay."""

    async def load(self, conn: AsyncConnection, subscription: str, *, start: str | int) -> int:
        """Load the position, creating it from ``start`` (earliest, latest or a position)."""
        pos = await conn.scalar(
            select(positions_table.c.position).where(positions_table.c.subscription == subscription)
        )
        if pos is not None:
            return int(pos)
        reader = OutboxReader()
        if start == "earliest":
            initial = 0
        elif start == "latest":
            initial = await reader.head(conn)
        elif isinstance(start, int) and not isinstance(start, bool) and start >= 0:
            await _check_start(conn, subscription, start, await reader.head(conn))
            initial = start
        else:
            raise InvalidArgument(
                f"start must be 'earliest', 'latest' or a position >= 0, not {start!r}"
            )
        try:
            async with conn.begin_nested():
                await conn.execute(
                    insert(positions_table).values(
                        subscription=subscription, position=initial, inflight=0, updated_at=utcnow()
                    )
                )
        except IntegrityError:
            # Another worker created it first. A locking read sees its committed row even
            # under REPEATABLE READ (MariaDB), where a plain SELECT would still see our old
            # snapshot without the row.
            pos = await conn.scalar(
                select(positions_table.c.position)
                .where(positions_table.c.subscription == subscription)
                .with_for_update(read=True)
            )
            if pos is None:  # pragma: no cover - the unique key said it exists
                raise
            return int(pos)
        return initial

    async def save(self, conn: AsyncConnection, subscription: str, position: int) -> None:
        """Store the position reached; clears the in-flight mark."""
        await conn.execute(
            update(positions_table)
            .where(positions_table.c.subscription == subscription)
            .values(position=position, inflight=0, updated_at=utcnow())
        )

    async def inflight(self, conn: AsyncConnection, subscription: str) -> int:
        """How many batches were started after the saved position and never finished."""
        found = await conn.scalar(
            select(positions_table.c.inflight).where(positions_table.c.subscription == subscription)
        )
        return int(found or 0)

    async def advance_and_mark(
        self, conn: AsyncConnection, subscription: str, position: int
    ) -> None:
        """Store the position delivered so far and mark the next batch in flight, in one
        statement: the mark restarts at 1 when the position moved, and counts up when it did
        not (the same batch is being tried again after a crash)."""
        col = positions_table.c
        # inflight is assigned before position: MySQL/MariaDB evaluate SET left to right and
        # would compare the position just assigned (the mark would never restart at 1).
        await conn.execute(
            update(positions_table)
            .where(col.subscription == subscription)
            .ordered_values(
                (col.inflight, case((col.position == position, col.inflight + 1), else_=1)),
                (col.position, position),
                (col.updated_at, utcnow()),
            )
        )


async def _stored_after(conn: AsyncConnection, after: int, upto: int) -> int:
    return int(
        await conn.scalar(
            select(func.count())
            .select_from(outbox_table)
            .where(outbox_table.c.position > after, outbox_table.c.position <= upto)
        )
        or 0
    )


async def _check_start(conn: AsyncConnection, subscription: str, start: int, head: int) -> None:
    """A start position is valid only if every event after it (up to the head) is stored.

    Positions are gap-free, so that holds exactly when the count of rows in ``(start, head]``
    is ``head - start``. A kept row below a removed range (a dead letter retention must keep)
    does not make the range whole. On failure, binary searches (count queries on the position
    index) find the removed range to name in the error.
    """
    if start >= head or await _stored_after(conn, start, head) == head - start:
        return
    # The lowest valid start: the smallest k >= start with (k, head] complete.
    lo, hi = start, head
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        if await _stored_after(conn, mid, head) == head - mid:
            hi = mid
        else:
            lo = mid
    valid_from = hi  # position hi itself is missing, everything after it is stored
    # The first missing position after start: the smallest m with (start, m] incomplete.
    lo, hi = start, valid_from
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        if await _stored_after(conn, start, mid) == mid - start:
            lo = mid
        else:
            hi = mid
    first_missing = hi
    missing = (
        f"position {first_missing}"
        if first_missing == valid_from
        else f"positions {first_missing} to {valid_from}"
    )
    raise PositionExpired(
        f"Subscription {subscription!r} asked to start after position {start}, but retention "
        f"already removed {missing} (some rows in that range may be kept, such as dead "
        f"letters), so events after {start} are no longer all there. Start after a position "
        f">= {valid_from} (every event after it is stored), 'latest' for new events only, or "
        "'earliest' for whatever is left; or keep events longer (retention)."
    )
