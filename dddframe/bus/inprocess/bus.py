"""In-process bus: after commit, the outbox is sequenced and delivered in this process.

Because it reads the outbox (not an in-memory queue), events that committed but were not
delivered when the process died are delivered after the next start. Run one application process
per database with this bus; for several processes use the database bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from dddframe.bus.dead_letter_store import DeadLetterStore
from dddframe.bus.delivery import SubscriptionRunner
from dddframe.bus.inprocess.options import InProcessListenerOptions
from dddframe.bus.loops import DeliveryLoops
from dddframe.bus.protocol import BusRuntime
from dddframe.bus.retry import ExponentialRetry, RetryPolicy
from dddframe.bus.subscription import Deliver
from dddframe.domain.envelope import Envelope
from dddframe.domain.events import DomainEvent
from dddframe.errors import ConfigurationError, NotStarted
from dddframe.outbox.reader import OutboxReader
from dddframe.outbox.status import SystemStatus, database_status

__all__ = ["DeliveryFaults", "InProcessBus"]

log = logging.getLogger("dddframe.bus.inprocess")


class DeliveryFaults(Protocol):
    """Fault injection hooks (see :mod:`dddframe.testing.faults`)."""

    def wrap(self, deliver: Deliver) -> Deliver: ...

    def after_commit(self, envelopes: Sequence[Envelope]) -> None: ...


class InProcessBus:
    """Delivers to the bound listeners in this process, in order per aggregate.

    >>> bus = InProcessBus(concurrency=4)
    >>> bus.name
    'inprocess'
    """

    name = "inprocess"
    listener_options = InProcessListenerOptions

    def __init__(
        self,
        *,
        retry: RetryPolicy | None = None,
        concurrency: int = 8,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        faults: DeliveryFaults | None = None,
    ) -> None:
        if concurrency < 1 or batch_size < 1 or poll_interval <= 0:
            raise ConfigurationError("concurrency and batch_size must be >= 1, poll_interval > 0")
        self.default_retry: RetryPolicy = retry or ExponentialRetry(base=0.2, max_delay=30, limit=8)
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.faults = faults
        self.runners: list[SubscriptionRunner] = []
        self._runtime: BusRuntime | None = None
        self._loops: DeliveryLoops | None = None
        self.dead_letters: DeadLetterStore = DeadLetterStore()  # the runtime's, once started

    async def start(self, runtime: BusRuntime) -> None:
        self._runtime = runtime
        self.dead_letters = runtime.dead_letters
        self.dead_letters.bind(runtime.database)
        self._loops = loops = DeliveryLoops(runtime.database, self.poll_interval)
        for sub in runtime.active_subscriptions():
            if self.faults is not None:
                sub.deliver = self.faults.wrap(sub.deliver)
            runner = SubscriptionRunner(
                runtime.database,
                sub,
                runtime.dead_letters,
                concurrency=self.concurrency,
                batch_size=self.batch_size,
                connect=loops.connections.connect,
            )
            await runner.start()
            self.runners.append(runner)
        if not self.runners:
            return  # nothing to deliver to in this process (consume=False or no listeners)
        loops.spawn(loops.deliver(lambda: self.runners), "dddframe-inprocess")
        for runner in self.runners:
            loops.spawn(loops.retries(runner), f"dddframe-retry-{runner.subscription.name}")
        loops.wake.set()  # deliver what an earlier process left behind

    async def stop(self) -> None:
        for runner in self.runners:
            runner.active = False
        if self._loops is not None:
            await self._loops.stop()
        for runner in self.runners:
            with contextlib.suppress(Exception):  # the next start re-delivers at most a batch
                await runner.flush()
        self.runners.clear()

    def notify(self, envelopes: Sequence[Envelope]) -> None:
        if self.faults is not None:
            self.faults.after_commit(envelopes)
        if self._loops is not None:
            self._loops.wake.set()

    async def publish(
        self,
        name: str | DomainEvent,
        payload: Mapping[str, Any] | None = None,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Envelope:
        """A direct message through the outbox (joins a running unit of work)."""
        if self._runtime is None:
            raise NotStarted("The in-process bus is not started: start the Application first.")
        return await self._runtime.engine.publish(name, payload, key=key, headers=headers)

    async def status(self) -> SystemStatus:
        """Positions, lag, retries and dead letters from the outbox tables."""
        if self._runtime is None:
            raise NotStarted("The in-process bus is not started: start the Application first.")
        return await database_status(self._runtime.database, self._runtime.subscriptions)

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until every event committed so far is delivered or dead-lettered."""
        assert self._runtime is not None, "the bus is not started"
        assert self._loops is not None
        db = self._runtime.database
        deadline = time.monotonic() + timeout
        reader = OutboxReader()
        while True:
            async with db.connect() as conn:
                await self._loops.sequencer.sequence(conn)
                head = await reader.head(conn)
            pending = [r for r in self.runners if await r.has_pending(head)]
            if not pending:
                # has_pending() may wait on the database, letting a retry deliver and record
                # new events after `head` was read: done only if the head did not move.
                async with db.connect() as conn:
                    await self._loops.sequencer.sequence(conn)
                    moved = await reader.head(conn) != head
                if not moved:
                    for runner in self.runners:  # so status and retention see it too
                        await runner.flush()
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"drain() gave up after {timeout}s; still pending: "
                    + ", ".join(f"{r.subscription.name} at {r.position}/{head}" for r in pending)
                )
            self._loops.wake.set()
            await asyncio.sleep(0.01)
