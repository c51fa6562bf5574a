"""How many connections a bus's delivery takes from the pool at once.

Every subscription runner reads its own batch when it is behind the head, and every pass wakes
all of them together; with its retry loop, parking and position writes, a worker with many
subscriptions would ask the pool for a connection per subscription at the same moment. With
more subscriptions than the pool holds (SQLAlchemy's default for PostgreSQL and MariaDB here:
10 + 20 overflow) the rest wait, and under load they time out (``QueuePool limit ... timed
out``). A :class:`ConnectionGate` shared by the runners of one bus lets at most ``limit`` of
those connections be checked out at once (by default half the pool, so the application's own
units of work and the bus's heartbeat always find one); the others wait their turn in order.

A connection is held only around a few statements and nothing waits on another gated
connection while holding one, so the gate cannot deadlock. It bounds the bus's own
connections only: a listener that opens its own (a unit of work) takes them from the pool as
any code does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import QueuePool

from dddframe.database import Database
from dddframe.errors import ConfigurationError

__all__ = ["Connect", "ConnectionGate", "pool_capacity"]

Connect = Callable[[], AbstractAsyncContextManager[AsyncConnection]]
"""What runners call for a connection: ``async with connect() as conn: ...``."""

UNBOUNDED_POOL_LIMIT = 16  # a pool without a size (unlimited overflow, NullPool)


def pool_capacity(database: Database) -> int | None:
    """How many connections ``database``'s pool hands out at most (None: no limit).

    >>> pool_capacity(Database("sqlite+aiosqlite:///app.db"))  # SQLAlchemy's 5 + 10
    15
    """
    pool = database.engine.pool
    if not isinstance(pool, QueuePool):
        return None
    overflow = int(getattr(pool, "_max_overflow", 0))
    if overflow < 0:
        return None  # max_overflow=-1: unlimited
    return pool.size() + overflow


class ConnectionGate:
    """Connections of ``database`` for one bus's runners, at most ``limit`` at once.

    ``limit`` defaults to half of :func:`pool_capacity` (at least 1), or
    ``UNBOUNDED_POOL_LIMIT`` for a pool without a limit.

    >>> db = Database("sqlite+aiosqlite:///app.db")
    >>> ConnectionGate(db).limit, ConnectionGate(db, limit=3).limit
    (7, 3)
    """

    def __init__(self, database: Database, limit: int | None = None) -> None:
        if limit is None:
            capacity = pool_capacity(database)
            limit = UNBOUNDED_POOL_LIMIT if capacity is None else max(1, capacity // 2)
        if limit < 1:
            raise ConfigurationError("the connection limit must be >= 1")
        self.database = database
        self.limit = limit
        self._slots = asyncio.Semaphore(limit)

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection once one of the ``limit`` slots is free; back to the pool after."""
        async with self._slots, self.database.connect() as conn:
            yield conn
