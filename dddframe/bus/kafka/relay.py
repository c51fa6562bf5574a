"""The relay: outbox -> Kafka, in commit order, advancing only after the broker acknowledged.

One relay per cluster reads the whole outbox by position (the shared Sequencer, OutboxReader and
PositionStore; its position is named ``relay.kafka.<cluster>``), produces the envelopes routed
to its cluster and stores the position a batch reached once every record of the batch was
acknowledged (``acks="all"``). A relay killed in between resends from the stored position:
at-least-once, duplicates absorbed by consumers' inboxes. A lease in ``dddframe_leases`` keeps
one active relay per cluster and outbox however many processes run one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner

from dddframe.bus.kafka.config import KafkaCluster
from dddframe.bus.kafka.records import to_record
from dddframe.bus.kafka.topics import TopicNaming
from dddframe.domain.envelope import Envelope
from dddframe.engine.database import Database
from dddframe.observability.tracing import relay_span
from dddframe.outbox.leases import Leases
from dddframe.outbox.reader import OutboxReader, PositionStore
from dddframe.outbox.sequencer import Sequencer

__all__ = ["Relay", "ensure_topics"]

log = logging.getLogger("dddframe.bus.kafka.relay")


async def ensure_topics(cluster: KafkaCluster, topics: set[str]) -> None:
    """Create missing topics with the cluster's partition count (existing ones are kept)."""
    if not topics:
        return
    admin = AIOKafkaAdminClient(
        bootstrap_servers=cluster.bootstrap,
        request_timeout_ms=int(cluster.send_timeout * 1000),
        **cluster.client_options,
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = sorted(topics - existing)
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(t, cluster.partitions, cluster.replication_factor) for t in missing]
                )
    finally:
        await admin.close()


class Relay:
    """Moves committed outbox events to one cluster. Started by :class:`KafkaBus`.

    ``route`` names the cluster of an envelope; envelopes of other clusters are passed over
    (another relay, with its own position, sends them).
    """

    def __init__(
        self,
        cluster_name: str,
        cluster: KafkaCluster,
        database: Database,
        naming: TopicNaming,
        route: Callable[[Envelope], str],
        *,
        owner: str,
        batch_size: int = 2000,
        poll_interval: float = 0.05,
        lease_ttl: float = 10.0,
        save_interval: float = 0.1,
    ) -> None:
        self.cluster_name = cluster_name
        self.cluster = cluster
        self.database = database
        self.naming = naming
        self.route = route
        self.name = f"relay.kafka.{cluster_name}"
        self.lease = f"dddframe.relay:kafka.{cluster_name}"
        self.batch_size = min(batch_size, cluster.max_in_flight)
        self.poll_interval = poll_interval
        self.position = 0  # stored: everything up to here was acknowledged
        self.sent = 0
        self.save_interval = save_interval
        self._read_upto = 0
        self._acked_upto = 0
        self._saved_at = 0.0
        self._prefetch: tuple[int, asyncio.Future[tuple[list[Envelope], int]]] | None = None
        self._inflight: collections.deque[tuple[int, int, asyncio.Future[list[Any]]]] = (
            collections.deque()
        )
        self.wake = asyncio.Event()
        self.active = False
        self._leases = Leases(database, owner, lease_ttl)
        self._renew_every = lease_ttl / 3
        self._renewed = 0.0
        self._producer: AIOKafkaProducer | None = None
        self._topics: set[str] = set()
        self._partitions: dict[str, list[int]] = {}
        self._partitioner = DefaultPartitioner()
        self._sequencer = Sequencer()
        self._reader = OutboxReader()
        self._positions = PositionStore()

    async def run(self) -> None:
        """Relay until cancelled; broker or database trouble is logged and retried."""
        backoff = 0.1
        try:
            while True:
                try:
                    if not await self._hold_lease():
                        await self._sleep(self._renew_every)
                        continue
                    moved = await self.run_once()
                    backoff = 0.1
                    if not moved:
                        await self._sleep(self.poll_interval)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning(
                        "%s: %s; resending from position %d in %.1fs",
                        self.name,
                        exc,
                        self.position,
                        backoff,
                    )
                    self._forget_inflight()
                    await self._close_producer()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            with contextlib.suppress(Exception):  # store what was acknowledged before leaving
                if self.active:
                    async with asyncio.timeout(2):
                        await self._settle(0)
                        await self._save()
            self._forget_inflight()
            await self._close_producer()
            if self.active:
                with contextlib.suppress(Exception):
                    await self._leases.release(self.lease)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.wake.wait()
        self.wake.clear()

    async def _hold_lease(self) -> bool:
        now = time.monotonic()
        if self.active and now - self._renewed < self._renew_every:
            return True
        held = await self._leases.acquire(self.lease)
        if held and not self.active:
            async with self.database.connect() as conn:
                self.position = await self._positions.load(conn, self.name, start="earliest")
                await conn.commit()
            self._forget_inflight()
            log.info("%s: active from position %d", self.name, self.position)
        elif not held and self.active:
            log.warning("%s: lost the lease; another relay sends now", self.name)
            self._forget_inflight()
        self.active = held
        self._renewed = now
        return held

    async def _connect(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(**self.cluster.producer_options())
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
            log.info("%s: connected to %s", self.name, self.cluster.bootstrap)
        return self._producer

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def run_once(self) -> int:
        """Read and send one batch; returns how far the read moved (0: caught up).

        Batches are pipelined: the next batch is read and sent while the broker acknowledges
        the previous one (at most ``max_in_flight`` records unacknowledged). A batch's position
        is stored only after it and every batch before it were acknowledged, at most every
        ``save_interval`` seconds while busy and at once when caught up.
        """
        producer = await self._connect()
        after = self._read_upto
        reading, self._prefetch = self._prefetch, None
        if reading is None or reading[0] != after:
            if reading is not None:
                reading[1].cancel()
            reading = (after, asyncio.ensure_future(self._read(after)))
        envelopes, upto = await reading[1]
        if len(envelopes) == self.batch_size:  # a backlog: read the next batch while sending
            self._prefetch = (upto, asyncio.ensure_future(self._read(upto)))
        if upto == after:
            await self._settle(0)
            await self._save()
            return 0
        mine = [
            (self.naming.topic_of(e), e) for e in envelopes if self.route(e) == self.cluster_name
        ]
        new_topics = {t for t, _ in mine} - self._topics
        if new_topics:
            await ensure_topics(self.cluster, new_topics)
            self._topics |= new_topics
        futures = await self._send_batches(producer, mine)
        self._inflight.append((upto, len(mine), asyncio.gather(*futures)))
        self._read_upto = upto
        await self._settle(self.cluster.max_in_flight - len(futures))
        if time.monotonic() - self._saved_at >= self.save_interval:
            await self._save()
        return upto - after

    async def _send_batches(
        self, producer: AIOKafkaProducer, mine: list[tuple[str, Envelope]]
    ) -> list[asyncio.Future[Any]]:
        """Produce records as whole batches per partition (far cheaper than one ``send()`` per
        record), partitioned like Kafka's default partitioner (murmur2 of the key), in order."""
        futures: list[asyncio.Future[Any]] = []
        batches: dict[tuple[str, int], Any] = {}
        for topic, env in mine:
            with relay_span(env, self.name, topic):  # the hand-over to the producer
                await self._add(producer, batches, futures, topic, env)
        for (topic, partition), batch in batches.items():
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures

    async def _add(
        self,
        producer: AIOKafkaProducer,
        batches: dict[tuple[str, int], Any],
        futures: list[asyncio.Future[Any]],
        topic: str,
        env: Envelope,
    ) -> None:
        """Append one record to its partition's batch, sending the batch when it is full."""
        key, value, headers = to_record(env)
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = sorted(await producer.partitions_for(topic))
        partition = self._partitioner(key, partitions, partitions)
        batch = batches.get((topic, partition))
        if batch is None:
            batch = batches[(topic, partition)] = producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = batches[(topic, partition)] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                # larger than a batch: sent alone, after what came before it
                futures.append(
                    await producer.send(topic, value, key=key, headers=headers, partition=partition)
                )

    async def _read(self, after: int) -> tuple[list[Envelope], int]:
        async with self.database.connect() as conn:
            await self._sequencer.sequence(conn)
            return await self._reader.read(conn, after=after, limit=self.batch_size)

    async def _settle(self, keep: int) -> None:
        """Wait for acknowledgements until at most ``keep`` records are unacknowledged."""
        while self._inflight:
            upto, count, acked = self._inflight[0]
            if not acked.done():
                if sum(n for _, n, _ in self._inflight) <= keep:
                    return
                async with asyncio.timeout(self.cluster.send_timeout):
                    await acked
            acked.result()  # raises the send error, if any
            self._inflight.popleft()
            self._acked_upto = upto
            self.sent += count

    async def _save(self) -> None:
        if self._acked_upto > self.position:
            async with self.database.connect() as conn:
                await self._positions.save(conn, self.name, self._acked_upto)
                await conn.commit()
            self.position = self._acked_upto
        self._saved_at = time.monotonic()

    def _forget_inflight(self) -> None:
        """After a failure: resend everything after the stored position."""
        for _, _, acked in self._inflight:
            acked.cancel()
        if self._prefetch is not None:
            self._prefetch[1].cancel()
            self._prefetch = None
        self._partitions.clear()
        self._inflight.clear()
        self._read_upto = self._acked_upto = self.position
