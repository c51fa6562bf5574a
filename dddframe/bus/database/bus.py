"""The database bus: durable delivery from the outbox to worker processes sharing a database.

Every subscription is owned by one live worker at a time through a lease in
``dddframe_leases`` (renewed by a heartbeat, taken over ``lease_ttl`` seconds after its owner
died, or released at once by a worker that hands it over: its pass ended, its position
stored). Workers split the subscriptions of their groups evenly; within a subscription,
``concurrency`` lanes deliver different aggregates in parallel and each aggregate in order. The
shared :class:`~dddframe.bus.delivery.SubscriptionRunner` does the delivering, parking,
retrying and dead-lettering; this module adds ownership, wake-up across processes (LISTEN/NOTIFY
on PostgreSQL, an in-process hint everywhere, a poll every ``run_interval`` always), retention,
direct messages and half messages. See docs/guarantees/database.md and
docs/adr/0100-database-bus-ownership.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from dddframe.bus.database.half import HalfMessage, HalfMessages
from dddframe.bus.database.options import DatabaseListenerOptions
from dddframe.bus.database.ownership import MEMBER, SUB, WORKER, Ownership
from dddframe.bus.dead_letter_store import DeadLetterStore
from dddframe.bus.delivery import SubscriptionRunner
from dddframe.bus.loops import DeliveryLoops
from dddframe.bus.protocol import BusRuntime
from dddframe.bus.retry import ExponentialRetry, RetryPolicy
from dddframe.domain.envelope import Envelope
from dddframe.domain.events import DomainEvent
from dddframe.errors import ConfigurationError, NotStarted
from dddframe.outbox.leases import Leases, process_owner
from dddframe.outbox.reader import OutboxReader, PositionStore
from dddframe.outbox.retention import purge_delivered, purge_inbox
from dddframe.outbox.status import SystemStatus, database_status
from dddframe.outbox.tables import OUTBOX_CHANNEL, positions_table
from dddframe.outbox.wakeup import PostgresWakeup

__all__ = ["DatabaseBus"]

log = logging.getLogger("dddframe.bus.database")


class DatabaseBus:
    """Durable delivery to worker processes, on SQLite, PostgreSQL and MariaDB.

    >>> bus = DatabaseBus(concurrency=8, limit_per_run=1000, run_interval=1.0)
    >>> bus.name, bus.concurrency
    ('database', 8)

    Options: ``retry`` (default policy; ``module.listen(..., retry=)`` overrides it),
    ``concurrency`` (lanes per subscription), ``limit_per_run`` (batch size), ``run_interval``
    (fallback poll, seconds), ``lease_ttl`` (seconds before a dead worker's subscriptions are
    taken over), ``retention`` (how long delivered events are kept; None keeps them),
    ``inbox_retention``, ``tx_check_timeout`` (half messages), ``crash_limit`` (times an event
    may kill the worker before it is dead-lettered).
    """

    name = "database"
    listener_options = DatabaseListenerOptions

    def __init__(
        self,
        *,
        retry: RetryPolicy | None = None,
        concurrency: int = 8,
        limit_per_run: int = 1000,
        run_interval: float = 1.0,
        lease_ttl: float = 10.0,
        retention: timedelta | None = timedelta(days=7),
        inbox_retention: timedelta | None = timedelta(days=7),
        retention_interval: float = 300.0,
        tx_check_timeout: float = 60.0,
        crash_limit: int = 3,
    ) -> None:
        if concurrency < 1 or limit_per_run < 1:
            raise ConfigurationError("concurrency and limit_per_run must be >= 1")
        if run_interval <= 0 or lease_ttl <= 0 or tx_check_timeout < 0:
            raise ConfigurationError(
                "run_interval and lease_ttl must be > 0, tx_check_timeout >= 0"
            )
        self.default_retry: RetryPolicy = retry or ExponentialRetry(
            base=0.5, max_delay=60, limit=10
        )
        self.concurrency = concurrency
        self.limit_per_run = limit_per_run
        self.run_interval = run_interval
        self.lease_ttl = lease_ttl
        self.retention = retention
        self.inbox_retention = inbox_retention
        self.retention_interval = retention_interval
        self.tx_check_timeout = tx_check_timeout
        self.crash_limit = crash_limit
        self.owner = process_owner()
        self.runners: dict[str, SubscriptionRunner] = {}
        self._runtime: BusRuntime | None = None
        self._leases: Leases | None = None
        self._ownership: Ownership | None = None
        self._wakeup: PostgresWakeup | None = None
        self._half: HalfMessages | None = None
        self._loops_: DeliveryLoops | None = None
        self._send_notify = True
        # Subscriptions given up whose runner still ends its pass and stores its position;
        # their leases are renewed until then and released right after (see _hand_over).
        self._handing_over: dict[str, SubscriptionRunner] = {}
        self._lease_ops = asyncio.Lock()  # heartbeats and hand-over releases, one at a time
        self.dead_letters: DeadLetterStore = DeadLetterStore()  # the runtime's, once started

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def runtime(self) -> BusRuntime:
        if self._runtime is None:
            raise NotStarted("The database bus is not started: start the Application first.")
        return self._runtime

    @property
    def _loops(self) -> DeliveryLoops:
        if self._loops_ is None:
            raise NotStarted("The database bus is not started: start the Application first.")
        return self._loops_

    async def start(self, runtime: BusRuntime) -> None:
        try:
            await self._start(runtime)
        except Exception as exc:
            lost = runtime.database.unavailable(exc)
            if lost is None or lost is exc:
                raise
            raise lost from exc

    async def _start(self, runtime: BusRuntime) -> None:
        self._runtime = runtime
        self.dead_letters = runtime.dead_letters
        self.dead_letters.bind(runtime.database)
        db = runtime.database
        self._loops_ = DeliveryLoops(db, self.run_interval)
        self._leases = Leases(db, self.owner, self.lease_ttl)
        self._ownership = Ownership(self._leases, self.lease_ttl)
        self._half = HalfMessages(db, runtime.engine, self.tx_check_timeout, self.notify)
        if db.dialect == "postgresql":
            self._wakeup = PostgresWakeup(db, OUTBOX_CHANNEL)
            if await self._wakeup.trigger_installed():
                self._send_notify = False  # the outbox trigger notifies in the writer's commit
            else:
                log.warning(
                    "the dddframe_outbox_notify trigger is missing (schema not created by "
                    "create_schema?); sending NOTIFY after each commit instead"
                )
        if not runtime.active_subscriptions():
            return  # a writer-only process: it stores and notifies, workers deliver
        # Register every subscription's position before anything is delivered or retained,
        # so retention never removes events a subscription has not started on yet.
        positions = PositionStore()
        async with db.connect() as conn:
            for sub in runtime.active_subscriptions():
                await positions.load(conn, sub.name, start=sub.start)
            await conn.commit()
        loops = self._loops
        if self._wakeup is not None:
            self._wakeup.listen(loops.wake.set)
        await self._heartbeat()
        loops.spawn(loops.deliver(lambda: self.runners.values()), "dddframe-db-deliver")
        loops.spawn(self._heartbeat_loop(), "dddframe-db-heartbeat")
        loops.spawn(self._maintenance_loop(), "dddframe-db-maintenance")
        loops.wake.set()

    async def stop(self) -> None:
        for runner in self.runners.values():
            runner.active = False
        if self._loops_ is not None:
            await self._loops_.stop()
        # A graceful stop leaves no crash mark: the next owner delivers in batches (it
        # re-delivers at most the batch after the stored position). Hand-overs cut short by
        # the stop's grace period are finished here too.
        for runner in [*self.runners.values(), *self._handing_over.values()]:
            with contextlib.suppress(Exception):
                await runner.hand_over()
        self._handing_over.clear()
        if self._wakeup is not None:
            await self._wakeup.close()
        if self._leases is not None:
            with contextlib.suppress(Exception):  # leases expire on their own otherwise
                # Subscriptions and jobs are free for the next owner at once; this process's
                # own heartbeat rows are deleted, so stopped workers leave nothing behind.
                await self._leases.release_all(forget=(WORKER, MEMBER))
        self.runners.clear()

    def notify(self, envelopes: Sequence[Envelope]) -> None:
        if self._loops_ is not None:
            self._loops_.wake.set()
        if self._wakeup is not None and self._send_notify:
            self._wakeup.send()

    # -- ownership ------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while not self._loops.stopping.is_set():
            await self._loops.pause(self.lease_ttl / 3)
            if self._loops.stopping.is_set():
                return
            try:
                await self._heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("heartbeat failed; retrying")

    async def _heartbeat(self) -> None:
        async with self._lease_ops:
            await self._heartbeat_once()

    async def _heartbeat_once(self) -> None:
        """Renew what we own, drop what we lost, take our fair share of the free ones."""
        assert self._ownership is not None
        leases = self._ownership.leases
        subs = {s.name: s for s in self.runtime.active_subscriptions()}
        await self._ownership.announce(s.group for s in subs.values())
        for name in list(self.runners):
            if not await leases.acquire(SUB + name):
                log.warning("lost the lease of %s; another worker delivers it now", name)
                self._drop(name)
        for name in sorted(self._handing_over):
            await leases.acquire(SUB + name)  # still ours until its position is stored
        plan = await self._ownership.plan({n: s.group for n, s in subs.items()}, self.runners)
        for name in plan.release:
            # More than our share: hand it to a less busy worker, once the runner's pass ended
            # and its position is stored (a lease released mid-batch would leave an in-flight
            # mark that the next owner must take for a crash).
            runner = self._drop(name)
            if runner is None:
                await leases.release(SUB + name)
                continue
            self._handing_over[name] = runner
            self._loops.spawn(self._hand_over(name, runner), f"dddframe-db-hand-over-{name}")
        for name in plan.take:
            if not await leases.acquire(SUB + name):
                continue
            runner = SubscriptionRunner(
                self.runtime.database,
                subs[name],
                self.runtime.dead_letters,
                concurrency=self.concurrency,
                batch_size=self.limit_per_run,
                crash_limit=self.crash_limit,
                connect=self._loops.connections.connect,
            )
            await runner.start()
            self.runners[name] = runner
            self._loops.spawn(self._loops.retries(runner), f"dddframe-db-retry-{name}")
            log.info("%s now delivers %s", self.owner, name)
            self._loops.wake.set()

    def _drop(self, name: str) -> SubscriptionRunner | None:
        if self._ownership is not None:
            self._ownership.dropped(name)
        runner = self.runners.pop(name, None)
        if runner is not None:
            runner.active = False  # its loops finish the current pass and end
        return runner

    async def _hand_over(self, name: str, runner: SubscriptionRunner) -> None:
        """Let ``runner``'s pass end, store its position and clear its in-flight mark, then
        release the lease: the next owner starts where this one stopped, in batches.

        A pass that is sequencing is waited for (``reading``): its shared read may mark the
        runner in flight, which must happen before the position is stored, not after; the
        rest of that pass (the other runners' catch-up) is not.
        If storing fails the mark stays and the next owner delivers carefully, as after a
        crash (safe, only slower). Cancelled by :meth:`stop`, it is left to ``stop``, which
        hands the runner over and releases every lease."""
        assert self._leases is not None
        try:
            async with self._loops.reading:
                pass  # a shared read that may mark the runner has ended
            await runner.hand_over()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: storing the position before handing it over failed", name)
        async with self._lease_ops:
            self._handing_over.pop(name, None)
            with contextlib.suppress(Exception):  # it expires on its own otherwise
                await self._leases.release(SUB + name)

    # -- delivery -------------------------------------------------------------------------

    async def _maintenance_loop(self) -> None:
        """Half-message checks every few seconds; retention every ``retention_interval``."""
        assert self._leases is not None and self._half is not None
        last_retention = time.monotonic()  # the first pass waits a full interval
        check_every = max(0.05, min(self.tx_check_timeout / 2, 5.0))
        while not self._loops.stopping.is_set():
            await self._loops.pause(check_every)
            if self._loops.stopping.is_set():
                return
            try:
                if await self._leases.acquire("dddframe.job:tx-check"):
                    await self._half.check_stale(self.runtime.tx_checkers)
                    # Heartbeat rows of workers that died (never stopped): gone after a while.
                    for prefix in (WORKER, MEMBER):
                        await self._leases.expire(prefix, grace=self.lease_ttl * 2)
                if time.monotonic() - last_retention >= self.retention_interval:
                    last_retention = time.monotonic()
                    if await self._leases.acquire("dddframe.job:retention"):
                        await self.purge()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("maintenance pass failed")

    async def purge(self) -> tuple[int, int]:
        """Apply retention now: (outbox rows deleted, inbox entries deleted)."""
        db = self.runtime.database
        events = await purge_delivered(db, self.retention) if self.retention is not None else 0
        inbox = await purge_inbox(db, self.inbox_retention) if self.inbox_retention else 0
        if events or inbox:
            log.info("retention removed %d delivered events and %d inbox entries", events, inbox)
        return events, inbox

    async def status(self) -> SystemStatus:
        """Positions, lag, retries and dead letters of every subscription (whichever worker
        owns it) from the outbox tables."""
        return await database_status(self.runtime.database, self.runtime.subscriptions)

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until every event committed so far is delivered or dead-lettered, by whichever
        worker owns each subscription (this process or another)."""
        db = self.runtime.database
        reader = OutboxReader()
        subs = self.runtime.active_subscriptions() or list(self.runtime.subscriptions)
        deadline = time.monotonic() + timeout
        while True:
            async with db.connect() as conn:
                await self._loops.sequencer.sequence(conn)
                head = await reader.head(conn)
                pending = [
                    s.name
                    for s in subs
                    if await _behind(conn, s.name, head)
                    or await self._parked_pending(s.name, s.dead_letter)
                ]
            if not pending:
                # The subscriptions were read one by one: one may have delivered and recorded
                # new events after `head` was read. Done only if the head did not move.
                async with db.connect() as conn:
                    await self._loops.sequencer.sequence(conn)
                    if await reader.head(conn) == head:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(f"drain() gave up after {timeout}s; pending: {pending}")
            self.notify([])
            await asyncio.sleep(0.02)

    async def _parked_pending(self, subscription: str, policy: str) -> bool:
        runner = self.runners.get(subscription)
        if runner is not None and runner.releasing:
            return True
        store = self.runtime.dead_letters
        async with self.runtime.database.connect() as conn:
            heads = await store.heads(conn, subscription, include_dead=policy == "block_aggregate")
        return any(h.state != "dead" for h in heads)

    # -- direct and half messages ---------------------------------------------------------

    async def publish(
        self,
        name: str | DomainEvent,
        payload: Mapping[str, Any] | None = None,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Envelope:
        """A direct message through the outbox (final's Publish / TxBus): inside a unit of work
        it joins that transaction, outside it commits on its own."""
        return await self.runtime.engine.publish(name, payload, key=key, headers=headers)

    @asynccontextmanager
    async def prepare(
        self,
        events: Sequence[DomainEvent | tuple[str, Mapping[str, object]]],
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[HalfMessage]:
        """Half messages: ``async with bus.prepare([PaymentCharged(...)]) as tx:`` stores the
        events as prepared; leaving the block commits them (or ``await tx.rollback()``); an
        exception rolls them back; a crash leaves them to the tx_checker bound by name."""
        if self._half is None:
            raise NotStarted("The database bus is not started: start the Application first.")
        async with self._half.prepare(events, key=key, headers=headers) as tx:
            yield tx


async def _behind(conn: Any, subscription: str, head: int) -> bool:
    pos = await conn.scalar(
        select(positions_table.c.position).where(positions_table.c.subscription == subscription)
    )
    return pos is None or int(pos) < head
