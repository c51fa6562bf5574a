"""Cross-process wake-up on PostgreSQL: NOTIFY after commit, LISTEN in workers.

A notification is a hint only: workers also poll every ``run_interval``, so a lost notification
(connection drop, a writer that died right after commit) delays an event by at most that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from dddframe.database import Database

__all__ = ["PostgresWakeup"]

log = logging.getLogger("dddframe.outbox.wakeup")


class PostgresWakeup:
    """Sends and receives ``NOTIFY <channel>`` through asyncpg."""

    def __init__(self, database: Database, channel: str) -> None:
        self.database = database
        self.channel = channel
        self._pending = False
        self._sender: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None

    async def trigger_installed(self) -> bool:
        """Whether create_schema installed the outbox trigger that NOTIFYs on commit."""
        async with self.database.connect() as conn:
            found = await conn.scalar(
                text("SELECT 1 FROM pg_trigger WHERE tgname = 'dddframe_outbox_notify'")
            )
        return found is not None

    def send(self) -> None:
        """Schedule one NOTIFY; calls while one is pending coalesce into it."""
        if self._pending:
            return
        self._pending = True
        self._sender = asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        try:
            self._pending = False
            async with self.database.connect() as conn:
                await conn.execute(text(f"NOTIFY {self.channel}"))
                await conn.commit()
        except Exception:  # a hint only; polling covers it
            log.warning("NOTIFY %s failed", self.channel, exc_info=True)

    def listen(self, on_wake: Callable[[], None]) -> None:
        self._listener = asyncio.get_running_loop().create_task(self._listen(on_wake))

    async def _listen(self, on_wake: Callable[[], None]) -> None:
        delay = 0.5
        while True:
            try:
                async with self.database.engine.connect() as conn:
                    raw: Any = (await conn.get_raw_connection()).driver_connection
                    lost = asyncio.Event()
                    await raw.add_listener(self.channel, lambda *_: on_wake())
                    raw.add_termination_listener(lambda *_, ev=lost: ev.set())
                    delay = 0.5
                    on_wake()  # anything committed while we were not listening
                    while not lost.is_set():
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(5):
                                await lost.wait()
                        if raw.is_closed():
                            break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("LISTEN %s lost; reconnecting in %.1fs", self.channel, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)

    async def close(self) -> None:
        for task in (self._listener, self._sender):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
