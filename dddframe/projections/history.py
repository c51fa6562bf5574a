"""Whether the outbox still holds the history a rebuild replays.

Positions are gap-free (:mod:`dddframe.outbox.sequencer`), so positions ``after+1 .. head`` are
all present unless retention removed some; this finds the first removed range.
"""

from __future__ import annotations

from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from dddframe.outbox.tables import outbox_table as outbox

__all__ = ["missing_range"]


async def missing_range(conn: AsyncConnection, after: int, head: int) -> tuple[int, int] | None:
    """The first range ``(first, last)`` of positions in ``after+1 .. head`` that the outbox no
    longer holds, or None when it holds them all."""
    if head <= after:
        return None
    present = await conn.scalar(
        select(func.count()).where(outbox.c.position > after, outbox.c.position <= head)
    )
    if int(present or 0) == head - after:
        return None
    lowest = await conn.scalar(select(func.min(outbox.c.position)).where(outbox.c.position > after))
    if lowest is None:
        return after + 1, head
    if int(lowest) > after + 1:
        return after + 1, int(lowest) - 1
    following = outbox.alias("following")
    start = await conn.scalar(
        select(func.min(outbox.c.position + 1)).where(
            outbox.c.position > after,
            outbox.c.position < head,
            ~exists().where(following.c.position == outbox.c.position + 1),
        )
    )
    if start is None:
        return None
    end = await conn.scalar(select(func.min(outbox.c.position)).where(outbox.c.position > start))
    return int(start), int(end) - 1 if end is not None else head
