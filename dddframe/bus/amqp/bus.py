"""The AMQP bus on RabbitMQ (aio-pika): outbox relay with publisher confirms, a topic exchange,
one queue per subscription, delay-queue retries and dead-letter queues."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aio_pika

from dddframe.bus.amqp.backfill import mark_new_queue
from dddframe.bus.amqp.consumer import SubscriptionConsumer
from dddframe.bus.amqp.dead_letters import AmqpDeadLetters
from dddframe.bus.amqp.options import AmqpListenerOptions
from dddframe.bus.amqp.relay import DEFAULT_MAX_MESSAGE_SIZE, RELAY_POSITION, AmqpRelay
from dddframe.bus.amqp.status import AmqpStatus
from dddframe.bus.amqp.topology import (
    Topology,
    delay_queue_name,
    dlq_name,
    routing_keys,
    topic_matches,
)
from dddframe.bus.protocol import BusRuntime
from dddframe.bus.retry import ExponentialRetry, RetryPolicy
from dddframe.domain.envelope import Envelope
from dddframe.domain.events import DomainEvent
from dddframe.domain.limits import check_bytes
from dddframe.errors import ConfigurationError, NotStarted
from dddframe.outbox.leases import process_owner
from dddframe.outbox.reader import OutboxReader, PositionStore
from dddframe.outbox.status import SystemStatus
from dddframe.outbox.tables import OUTBOX_CHANNEL
from dddframe.outbox.wakeup import PostgresWakeup

__all__ = ["AmqpBus"]

log = logging.getLogger("dddframe.bus.amqp")


class AmqpBus:
    """Events through RabbitMQ.

    >>> bus = AmqpBus(url="amqp://guest:guest@127.0.0.1:5672/", exchange="shop")
    >>> bus.name, bus.exchange
    ('amqp', 'shop')

    Options: ``url``; ``exchange`` (one topic exchange per application); ``retry`` (default
    policy, ``module.listen(..., retry=)`` overrides); ``concurrency`` (lanes per subscription)
    and ``prefetch`` (unacknowledged messages per consumer; final's NumSubscriber/NumAcker);
    ``quorum`` (quorum queues); ``queue_prefix`` (put before every queue name, so several
    applications or environments can share a vhost); ``purge_on_startup`` (development: empty
    the subscription queues at start); ``relay`` (run the outbox relay in this process;
    ``dddframe relay`` runs it alone); ``relay_batch``; ``poll_interval`` (relay poll when no
    commit woke it); ``lease_ttl``; ``max_message_size`` (the largest message the relay
    publishes, at most the broker's: a larger event is dead-lettered without its payload).
    ``bus="amqp"`` reads the URL from ``DDDFRAME_AMQP_URL``; the exchange and the queue prefix
    default to ``DDDFRAME_AMQP_EXCHANGE`` and ``DDDFRAME_AMQP_QUEUE_PREFIX`` when set.
    """

    name = "amqp"
    listener_options = AmqpListenerOptions

    def __init__(
        self,
        url: str | None = None,
        *,
        exchange: str | None = None,
        retry: RetryPolicy | None = None,
        concurrency: int = 8,
        prefetch: int = 256,
        quorum: bool = False,
        queue_prefix: str | None = None,
        purge_on_startup: bool = False,
        relay: bool = True,
        relay_batch: int = 1000,
        poll_interval: float = 0.5,
        lease_ttl: float = 10.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        url = url or os.environ.get("DDDFRAME_AMQP_URL")
        if not url:
            raise ConfigurationError(
                "AmqpBus needs a broker URL: pass url='amqp://user:pass@host:5672/' or set "
                "DDDFRAME_AMQP_URL."
            )
        if not url.startswith(("amqp://", "amqps://")):
            raise ConfigurationError(
                f"AmqpBus url must start with amqp:// or amqps://, not {url!r}"
            )
        if concurrency < 1 or prefetch < 1 or relay_batch < 1:
            raise ConfigurationError("concurrency, prefetch and relay_batch must be >= 1")
        if not isinstance(max_message_size, int) or max_message_size < 1024:
            raise ConfigurationError(
                f"max_message_size must be an int of at least 1024 bytes, not {max_message_size!r}"
            )
        exchange = exchange or os.environ.get("DDDFRAME_AMQP_EXCHANGE") or "dddframe"
        if queue_prefix is None:
            queue_prefix = os.environ.get("DDDFRAME_AMQP_QUEUE_PREFIX", "")
        check_bytes(exchange, "AMQP exchange", where="AmqpBus(exchange=...)")
        check_bytes(queue_prefix, "AMQP queue prefix", where="AmqpBus(queue_prefix=...)")
        self.url = url
        self.exchange = exchange
        self.default_retry: RetryPolicy = retry or ExponentialRetry(
            base=0.5, max_delay=60, limit=10
        )
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.quorum = quorum
        self.purge_on_startup = purge_on_startup
        self.relay_enabled = relay
        self.relay_batch = relay_batch
        self.poll_interval = poll_interval
        self.lease_ttl = lease_ttl
        self.max_message_size = max_message_size
        self.owner = process_owner()
        self.queue_prefix = queue_prefix
        self.topology = Topology(exchange, quorum=quorum, queue_prefix=queue_prefix)
        self.consumers: list[SubscriptionConsumer] = []
        self.relay: AmqpRelay | None = None
        self._runtime: BusRuntime | None = None
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._probe: aio_pika.abc.AbstractChannel | None = None  # for passive declares
        self._tasks: list[asyncio.Task[None]] = []
        self._wakeup: PostgresWakeup | None = None
        self.dead_letters = AmqpDeadLetters(
            self._new_channel, self._subscription_names, self.topology.queue_of
        )
        self._status = AmqpStatus(
            self._new_channel,
            self.topology,
            lambda: self.runtime.database,
            lambda: self.runtime.subscriptions,
            self.dead_letters,
            self._local_delays,
        )

    @property
    def runtime(self) -> BusRuntime:
        if self._runtime is None:
            raise NotStarted("The AMQP bus is not started: start the Application first.")
        return self._runtime

    def _subscription_names(self) -> list[str]:
        return [s.name for s in self.runtime.subscriptions]

    def _queues_bound_to(self, name: str) -> list[str]:
        """The queues of the application whose bindings match the routing key ``name``."""
        return [
            self.topology.queue_of(sub.name)
            for sub in self.runtime.subscriptions
            if any(topic_matches(pattern, name) for pattern in routing_keys(sub))
        ]

    def _local_delays(self, subscription: str) -> list[int]:
        """The delay queues (ms) this process's consumer of a subscription uses right now."""
        return [
            h.delay_ms
            for c in self.consumers
            if c.subscription.name == subscription
            for h in c._holds.values()
            if h.delay_ms
        ]

    async def status(self) -> SystemStatus:
        """Queue depths of every subscription's queue, delay queues and dead-letter queue
        (see :mod:`dddframe.bus.amqp.status`)."""
        return await self._status.read()

    async def _connect(self) -> aio_pika.abc.AbstractRobustConnection:
        if self._connection is None:
            # connect_robust reconnects and redeclares queues, exchanges and consumers.
            self._connection = await aio_pika.connect_robust(self.url)
        return self._connection

    async def _new_channel(self) -> aio_pika.abc.AbstractChannel:
        return await (await self._connect()).channel(publisher_confirms=True)

    async def start(self, runtime: BusRuntime) -> None:
        self._runtime = runtime
        channel = await self._new_channel()
        await self.topology.exchange(channel)
        # Declare and bind every subscription's queue, consumed here or not, before the relay
        # publishes: a message routed to an exchange with no bound queue would be dropped.
        for sub in runtime.subscriptions:
            name = self.topology.queue_of(sub.name)
            if sub.start != "latest" and not await self._queue_exists(name):
                # A new subscription: its consumer first delivers what the outbox holds.
                await mark_new_queue(runtime.database, name, sub.start)
            queue = await self.topology.subscription_queue(
                channel, self.topology.queue_of(sub.name), routing_keys(sub)
            )
            if self.purge_on_startup and sub in runtime.active_subscriptions():
                await queue.purge()
                dlq = await channel.declare_queue(
                    dlq_name(self.topology.queue_of(sub.name)), durable=True
                )
                await dlq.purge()
        for sub in runtime.active_subscriptions():
            consumer = SubscriptionConsumer(
                sub,
                await self._new_channel(),
                self.topology,
                concurrency=self.concurrency,
                database=runtime.database,
            )
            await consumer.start(self.prefetch)
            self.consumers.append(consumer)
        await channel.close()
        await self._close_probe()
        if self.relay_enabled:
            self.relay = AmqpRelay(
                self.url,
                self.topology,
                runtime.database,
                owner=self.owner,
                queues_for=self._queues_bound_to,
                max_message_size=self.max_message_size,
                batch_size=self.relay_batch,
                poll_interval=self.poll_interval,
                lease_ttl=self.lease_ttl,
            )
            self._tasks.append(asyncio.create_task(self.relay.run(), name="dddframe-amqp-relay"))
            if runtime.database.dialect == "postgresql":
                # Commits in other processes wake the relay through the outbox trigger.
                self._wakeup = PostgresWakeup(runtime.database, OUTBOX_CHANNEL)
                self._wakeup.listen(self.relay.wake.set)
            self.relay.wake.set()

    async def stop(self) -> None:
        if self._wakeup is not None:
            await self._wakeup.close()
        for consumer in self.consumers:
            await consumer.stop()
        self.consumers.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None

    def notify(self, envelopes: Sequence[Envelope]) -> None:
        if self.relay is not None:
            self.relay.wake.set()

    async def publish(
        self,
        name: str | DomainEvent,
        payload: Mapping[str, Any] | None = None,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Envelope:
        """A direct message through the outbox (joins the unit of work when inside one); its
        routing key is its name (final's Publish / Transaction(tx, fn(txBus)))."""
        return await self.runtime.engine.publish(name, payload, key=key, headers=headers)

    async def _queue_exists(self, name: str) -> bool:
        """A passive declare on a probe channel kept while queues are found (a failed passive
        declare closes its channel: the next call opens another)."""
        if self._probe is None or self._probe.is_closed:
            self._probe = await self._new_channel()
        try:
            await self._probe.declare_queue(name, passive=True)
            return True
        except aio_pika.exceptions.ChannelClosed:
            self._probe = None
            return False

    async def _close_probe(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            with contextlib.suppress(Exception):
                await probe.close()

    async def _queue_depth(self, channel: aio_pika.abc.AbstractChannel, name: str) -> int:
        try:
            queue = await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return 0
        result = queue.declaration_result
        return int(result.message_count or 0)

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until the relay sent everything committed and the consumers of this process
        handled what reached their queues (delivered, or dead-lettered)."""
        deadline = time.monotonic() + timeout
        reader, positions = OutboxReader(), PositionStore()
        quiet = 0
        while True:
            async with self.runtime.database.connect() as conn:
                head = await reader.head(conn)
                sent = await positions.load(conn, RELAY_POSITION, start="earliest")
                await conn.commit()
            busy = sent < head and self.relay_enabled
            for consumer in self.consumers:
                busy = busy or consumer.inflight > 0 or consumer.holding
                if not busy:
                    channel = await self._new_channel()
                    try:
                        names = [consumer.queue_name] + [
                            delay_queue_name(consumer.queue_name, h.delay_ms)
                            for h in consumer._holds.values()
                            if not h.dead
                        ]
                        for name in names:
                            busy = busy or await self._queue_depth(channel, name) > 0
                    finally:
                        with contextlib.suppress(Exception):
                            await channel.close()
            quiet = 0 if busy else quiet + 1
            if quiet >= 3:  # idle three times in a row: nothing in flight between checks
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"drain() gave up after {timeout}s: relay at {sent}/{head}")
            self.notify([])
            await asyncio.sleep(0.05)
