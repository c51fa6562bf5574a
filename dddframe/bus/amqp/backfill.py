"""A new subscription on AMQP receives the events committed before it existed.

RabbitMQ routes a message only to the queues bound when it is published, so a subscription
added after its events were relayed would start with an empty queue. The bus fills that gap
from the outbox, which keeps the history:

1. When the bus declares a subscription's queue that did not exist yet (and the subscription
   does not say ``start="latest"``), it first stores a *backfill mark* in
   ``dddframe_positions`` (``amqp.backfill:<queue>``) at the subscription's start (0 for
   ``earliest``, or the position given). The mark also holds retention back, so the history
   it needs is kept.
2. The subscription's consumer, before it consumes the queue, delivers the outbox events of the
   subscription's names from the mark up to the outbox head read *after* the queue was bound,
   in position order, with the subscription's retries and dead letters, moving the mark as it
   goes (a consumer killed mid-way resumes from it), and removes the mark when it is done.
3. It then consumes the queue, acknowledging without delivering the first-time messages at or
   below that head (the relay published them after the binding, and the backfill delivered
   them); retries, waiting and replayed messages are always delivered.

An event relayed before the binding is in the outbox below the head; one sequenced after the
head read can only be relayed after the binding, so it is in the queue: nothing is missed, and
an aggregate's events are delivered in order. A second consumer of the same subscription that
starts while the mark is there backfills too (at least once: the inbox absorbs the duplicates).
"""

from __future__ import annotations

from sqlalchemy import delete, inspect, select
from sqlalchemy.exc import DBAPIError

from dddframe.database import Database
from dddframe.outbox.reader import PositionStore
from dddframe.outbox.tables import positions_table

__all__ = ["MARK_PREFIX", "advance_mark", "clear_mark", "mark_new_queue", "pending_mark"]

MARK_PREFIX = "amqp.backfill:"


async def _no_schema(database: Database) -> bool:
    """True when the framework tables are not there yet: the outbox has no history then."""
    async with database.connect() as conn:
        return not await conn.run_sync(lambda sync: inspect(sync).has_table(positions_table.name))


async def mark_new_queue(database: Database, queue: str, start: str | int) -> None:
    """Store the backfill mark of a queue about to be declared for the first time (nothing to
    mark while the schema does not exist: an application creating it after start)."""
    try:
        async with database.connect() as conn:
            await PositionStore().load(conn, MARK_PREFIX + queue, start=start)
            await conn.commit()
    except DBAPIError:
        if not await _no_schema(database):
            raise


async def pending_mark(database: Database, queue: str) -> int | None:
    """Where the queue's backfill stands, or None when it has none to do."""
    try:
        async with database.connect() as conn:
            found = await conn.scalar(
                select(positions_table.c.position).where(
                    positions_table.c.subscription == MARK_PREFIX + queue
                )
            )
            await conn.commit()
    except DBAPIError:
        if await _no_schema(database):
            return None
        raise
    return None if found is None else int(found)


async def advance_mark(database: Database, queue: str, position: int) -> None:
    async with database.connect() as conn:
        await PositionStore().save(conn, MARK_PREFIX + queue, position)
        await conn.commit()


async def clear_mark(database: Database, queue: str) -> None:
    async with database.connect() as conn:
        await conn.execute(
            delete(positions_table).where(positions_table.c.subscription == MARK_PREFIX + queue)
        )
        await conn.commit()
