"""The background loops of the buses that read the outbox themselves (in-process, database).

One place for: waking on a hint or a poll interval, sequencing then catching every runner up,
the per-subscription retry loop, and a graceful stop. A pass ends only when every runner's
catch-up ended, so the next pass never runs a subscription a second time alongside the first
(and each runner lets one pass in at a time anyway); a runner that fails is logged and backs off
on its own while the others go on. Stopping lets the current pass finish
(a statement cancelled half-way can strand a connection that still holds a lock, which SQLite
then makes every other writer wait for), and only cancels what is still running after a grace
period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from dddframe.bus.delivery import SubscriptionRunner
from dddframe.bus.gate import ConnectionGate
from dddframe.database import Database
from dddframe.outbox.sequencer import Sequencer, SharedRead

__all__ = ["DeliveryLoops"]

log = logging.getLogger("dddframe.bus.loops")

FLUSH_WHEN_IDLE = 0.1  # seconds without a wake-up before lazily kept positions are stored
MAX_BACKOFF = 5.0  # seconds a failing runner waits at most before its next pass


class DeliveryLoops:
    """Tasks that deliver the outbox to runners until :meth:`stop`."""

    def __init__(self, database: Database, interval: float) -> None:
        self.database = database
        self.interval = interval
        self.wake = asyncio.Event()
        self.stopping = asyncio.Event()
        self.sequencer = Sequencer()
        self._tasks: list[asyncio.Task[None]] = []
        # Held while a pass picks its runners and sequences (where the shared read marks them
        # in flight): a runner handed over waits for it, so no shared read marks it after it
        # stored its position (see SubscriptionRunner.hand_over, which waits for the runner's
        # own read and delivery).
        self.reading = asyncio.Lock()
        # The runners' own connections, a bounded share of the pool at once: every runner
        # wakes in the same pass, and with many subscriptions they would ask for more
        # connections at once than the pool has (see dddframe.bus.gate).
        self.connections = ConnectionGate(database)
        self._connection: AsyncConnection | None = None
        # runner -> (monotonic time of its next pass, current back-off) after a failed pass
        self._failing: dict[SubscriptionRunner, tuple[float, float]] = {}

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.append(task)
        return task

    async def pause(self, seconds: float, event: asyncio.Event | None = None) -> None:
        """Sleep up to ``seconds``; return early when ``event`` is set or the loops stop."""
        waits = [asyncio.ensure_future(self.stopping.wait())]
        if event is not None:
            waits.append(asyncio.ensure_future(event.wait()))
        try:
            await asyncio.wait(waits, timeout=max(seconds, 0.0), return_when="FIRST_COMPLETED")
        finally:
            for w in waits:
                w.cancel()

    async def deliver(self, runners: Callable[[], Iterable[SubscriptionRunner]]) -> None:
        """Wake on a hint or every ``interval``; sequence; catch every runner up."""
        while not self.stopping.is_set():
            unsaved = [r for r in runners() if r.unsaved]
            await self.pause(FLUSH_WHEN_IDLE if unsaved else self.interval, self.wake)
            if unsaved and not self.wake.is_set() and not self.stopping.is_set():
                # Quiet for a moment: store the positions the last passes reached (they are
                # stored lazily to keep writes off the path from a commit to its listeners).
                await self._flush(unsaved)
                continue
            self.wake.clear()
            if self.stopping.is_set():
                return
            if await self._pass(runners):
                await self.pause(min(self.interval, 1.0))
                self.wake.set()

    async def _pass(self, runners: Callable[[], Iterable[SubscriptionRunner]]) -> bool:
        """Sequence and catch every runner up once; True when the sequencer failed."""
        async with self.reading:
            now = time.monotonic()
            every = list(runners())
            self._failing = {r: b for r, b in self._failing.items() if r in every}
            current = [r for r in every if self._failing.get(r, (0.0, 0.0))[0] <= now]
            try:
                shared = await self._sequence(current)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivery pass failed; retrying after a pause")
                return True
        head = self.sequencer.head
        # return_exceptions: the pass waits for every runner, even when one fails.
        results = await asyncio.gather(
            *(self._catch_up(r, head, shared) for r in current), return_exceptions=True
        )
        for runner, result in zip(current, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, BaseException):
                self._back_off(runner, result)
            else:
                self._failing.pop(runner, None)
        return False

    def _back_off(self, runner: SubscriptionRunner, error: BaseException) -> None:
        """Give a failing runner a pause of its own (doubling, up to MAX_BACKOFF)."""
        _, last = self._failing.get(runner, (0.0, 0.0))
        backoff = min(self.interval, 0.5) if last == 0 else min(last * 2, MAX_BACKOFF)
        self._failing[runner] = (time.monotonic() + backoff, backoff)
        log.error(
            "%s: delivery pass failed at position %d; the subscription tries again in %.1fs, "
            "the others go on: %s",
            runner.subscription.name,
            runner.position,
            backoff,
            error,
            exc_info=error,
        )
        asyncio.get_running_loop().call_later(backoff, self.wake.set)

    @staticmethod
    async def _flush(runners: list[SubscriptionRunner]) -> None:
        for runner in runners:
            try:
                await runner.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("%s: storing the position failed", runner.subscription.name)

    async def _sequence(self, runners: list[SubscriptionRunner]) -> SharedRead | None:
        """Run the sequencer on a connection kept between passes: a pool checkout pings the
        server first, a round trip between every commit and its listeners otherwise. Where
        the database can, the same call reads the next batch for the runners that are caught
        up (most of them, most of the time) and marks it in flight: one round trip from a
        wake-up to their listeners. A failed pass drops the connection, so a broken one is
        replaced by the next."""
        if self._connection is None:
            self._connection = await self.database.connect().start()
        after = self.sequencer.head
        sharing = [r for r in runners if r.shares_reads_at(after)]
        try:
            if sharing:
                shared = await self.sequencer.sequence_and_read(
                    self._connection,
                    after=after,
                    limit=min(r.batch_size for r in sharing),
                    subscriptions={
                        r.subscription.name: r.subscription.event_names for r in sharing
                    },
                )
                if shared is not None:
                    return shared
            await self.sequencer.sequence(self._connection)
            return None
        except BaseException:
            await self._close_connection()
            raise

    async def _close_connection(self) -> None:
        conn, self._connection = self._connection, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _catch_up(
        self, runner: SubscriptionRunner, head: int, shared: SharedRead | None = None
    ) -> None:
        """Deliver up to ``head``, the position the pass's sequencer reached (starting with
        the pass's shared read if it was made for this runner); what committed later has
        woken the loop again and is read by the next pass."""
        if shared is not None and runner.can_take(shared):
            await runner.take(shared)
            if runner.caught_up:
                return
        while not self.stopping.is_set() and runner.active:
            if not await runner.run_once(head) or runner.caught_up:
                return

    async def retries(self, runner: SubscriptionRunner) -> None:
        """Deliver the runner's due retries until it is dropped or the loops stop."""
        while not self.stopping.is_set() and runner.active:
            try:
                wait = await runner.run_retries()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: retry pass failed", runner.subscription.name)
                wait = self.interval
            runner.retry_wakeup.clear()
            await self.pause(
                self.interval if wait is None else min(wait, self.interval), runner.retry_wakeup
            )

    async def stop(self, grace: float = 10.0) -> None:
        """Let running passes finish (up to ``grace`` seconds), then cancel the rest."""
        self.stopping.set()
        tasks, self._tasks = self._tasks, []
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._close_connection()
