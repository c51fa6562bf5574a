"""Lock keys for commands (dddfirework's locker): serialise commands that share a key.

The default :class:`AsyncioLocker` serialises within one process. On PostgreSQL the engine uses
:class:`PostgresAdvisoryLocker`, which takes transaction-scoped advisory locks so the lock holds
across processes and is released by commit or rollback.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["AsyncioLocker", "Locker", "PostgresAdvisoryLocker"]


class Locker(Protocol):
    """Holds the given keys for the duration of a unit of work."""

    def hold(
        self, keys: Sequence[str], session: AsyncSession
    ) -> AbstractAsyncContextManager[None]: ...


class AsyncioLocker:
    """In-process locks by key (keys are taken in sorted order, so no deadlock)."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @asynccontextmanager
    async def hold(self, keys: Sequence[str], session: AsyncSession) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            held = []
            for key in sorted(set(keys)):
                lock = self._locks.get(key)
                if lock is None:
                    lock = asyncio.Lock()
                    self._locks[key] = lock
                held.append(lock)  # strong reference while held
                await stack.enter_async_context(lock)
            yield


class PostgresAdvisoryLocker:
    """``pg_advisory_xact_lock`` on each key, inside the unit of work's transaction."""

    @asynccontextmanager
    async def hold(self, keys: Sequence[str], session: AsyncSession) -> AsyncIterator[None]:
        for key in sorted(set(keys)):
            await session.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key}
            )
        yield
