"""Retention: delete outbox rows every position has passed, and expired inbox entries.

A row is deleted only when it is sequenced, older than the retention period, at or below the
lowest position stored in ``dddframe_positions`` (every subscription and every relay), at or
below what projections need (:func:`projections_floor`: what they declare with
``keep_history``, and where running rebuilds are), and not parked by any subscription.
Unsequenced rows (including half messages) are never touched. Parked rows (dead letters) are
kept, so what is left can have holes: a subscription that later asks to start after a position
some of whose successors were removed gets :class:`~dddframe.errors.PositionExpired` naming the
removed range (eventx's ErrEventNotFound) instead of silently skipping them; see
``PositionStore.load``.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from dddframe.database import Database
from dddframe.outbox.records import utcnow
from dddframe.outbox.tables import (
    inbox_table,
    outbox_table,
    parked_table,
    positions_table,
    projection_checkpoints_table,
    projections_table,
)

__all__ = ["projections_floor", "purge_delivered", "purge_inbox"]


async def purge_delivered(database: Database, older_than: timedelta, batch: int = 10_000) -> int:
    """Delete delivered outbox rows older than ``older_than``; returns how many."""
    cutoff = utcnow() - older_than
    total = 0
    async with database.connect() as conn:
        lowest = await conn.scalar(select(func.min(positions_table.c.position)))
        if lowest is None:
            return 0  # no subscription or relay has read anything: keep everything
        lowest = min(lowest, await projections_floor(conn, lowest))
        while True:
            ids = (
                (
                    await conn.execute(
                        select(outbox_table.c.id)
                        .where(
                            outbox_table.c.position.is_not(None),
                            outbox_table.c.position <= lowest,
                            outbox_table.c.occurred_at < cutoff,
                            outbox_table.c.event_id.not_in(select(parked_table.c.event_id)),
                        )
                        .order_by(outbox_table.c.position)
                        .limit(batch)
                    )
                )
                .scalars()
                .all()
            )
            if not ids:
                break
            await conn.execute(delete(outbox_table).where(outbox_table.c.id.in_(ids)))
            await conn.commit()
            total += len(ids)
    return total


async def projections_floor(conn: AsyncConnection, default: int) -> int:
    """The lowest position projections need kept: what each declares (``keep_after``: 0 for a
    projection that keeps its whole history) and where each running rebuild has replayed to."""
    declared = await conn.scalar(select(func.min(projections_table.c.keep_after)))
    rebuilding = await conn.scalar(
        select(func.min(projection_checkpoints_table.c.position)).where(
            projection_checkpoints_table.c.name == projections_table.c.name,
            projection_checkpoints_table.c.generation == projections_table.c.rebuild_generation,
        )
    )
    found = [int(v) for v in (declared, rebuilding) if v is not None]
    return min(found, default=default)


async def purge_inbox(database: Database, older_than: timedelta) -> int:
    """Delete inbox entries older than ``older_than`` (easy-bus kept them forever)."""
    async with database.connect() as conn:
        result = await conn.execute(
            delete(inbox_table).where(inbox_table.c.processed_at < utcnow() - older_than)
        )
        await conn.commit()
    return int(result.rowcount or 0)
