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
from collections.abc import Callable, Collection
from dataclasses import replace
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner

from dddframe.bus.kafka.config import KafkaCluster
from dddframe.bus.kafka.records import Record, record_size, sized_record, to_record
from dddframe.bus.kafka.topics import ROUTE_CLUSTER, TopicNaming, topic_problem
from dddframe.database import Database
from dddframe.domain.envelope import Envelope
from dddframe.errors import ConfigurationError
from dddframe.observability.tracing import relay_span, tracing_enabled
from dddframe.outbox.records import UNDECODABLE
from dddframe.outbox.relay import OutboxRelay

__all__ = ["Relay", "ensure_topics"]

log = logging.getLogger("dddframe.bus.kafka.relay")
_KEY_PARTITIONS_MAX = 100_000


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


class Relay(OutboxRelay):
    """Moves committed outbox events to one cluster. Started by :class:`KafkaBus`.

    ``route`` names the cluster of an envelope; envelopes of other clusters are passed over
    (another relay, with its own position, sends them). ``clusters`` are the application's
    cluster names. An event Kafka would refuse as it is — its topic is not a valid topic name,
    it names a cluster the application does not have, its record is larger than
    ``max_request_size`` — is sent as poison (:meth:`OutboxRelay.refuse`) to the topic the
    listeners of its name read, so it is dead-lettered and the relay goes on.
    """

    def __init__(
        self,
        cluster_name: str,
        cluster: KafkaCluster,
        database: Database,
        naming: TopicNaming,
        route: Callable[[Envelope], str],
        *,
        clusters: Collection[str] = (),
        owner: str,
        batch_size: int = 2000,
        poll_interval: float = 0.05,
        lease_ttl: float = 10.0,
        save_interval: float = 0.1,
    ) -> None:
        super().__init__(
            database,
            name=f"relay.kafka.{cluster_name}",
            lease=f"dddframe.relay:kafka.{cluster_name}",
            owner=owner,
            batch_size=min(batch_size, cluster.max_in_flight),
            poll_interval=poll_interval,
            lease_ttl=lease_ttl,
        )
        self.cluster_name = cluster_name
        self.cluster = cluster
        self.naming = naming
        self.route = route
        self.clusters = frozenset(clusters) or frozenset({cluster_name})
        self.save_interval = save_interval
        self._read_upto = 0
        self._acked_upto = 0
        self._saved_at = 0.0
        self._inflight: collections.deque[tuple[int, int, asyncio.Future[list[Any]]]] = (
            collections.deque()
        )
        self._producer: AIOKafkaProducer | None = None
        self._topics: set[str] = set()
        self._partitions: dict[str, list[int]] = {}
        self._key_partitions: dict[tuple[str, bytes], int] = {}  # of self._partitions
        self._partitioner = DefaultPartitioner()

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

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def run_once(self) -> int:
        """Read and send one batch; returns how far the read moved (0: caught up). A broker
        error caused by the cluster's settings is raised as a ConfigurationError saying what
        to change (logged by the relay loop)."""
        try:
            return await self._send_once()
        except Exception as exc:
            hint = self.cluster.explain(exc)
            if hint is None:
                raise
            raise ConfigurationError(hint) from exc

    async def _send_once(self) -> int:
        """Read and send one batch; returns how far the read moved (0: caught up).

        Batches are pipelined: the next batch is read (by :meth:`OutboxRelay.read`) and sent
        while the broker acknowledges the previous one (at most ``max_in_flight`` records
        unacknowledged). A batch's position is stored only after it and every batch before it
        were acknowledged, at most every ``save_interval`` seconds while busy and at once when
        caught up.
        """
        producer = await self._connect()
        after = self._read_upto
        envelopes, upto = await self.read(after)  # a backlog's next batch is read meanwhile
        if upto == after:
            await self._settle(0)
            await self._save()
            return 0
        mine = [
            r for e in envelopes if self.route(e) == self.cluster_name if (r := self._routed(e))
        ]
        new_topics = {t for t, _, _ in mine} - self._topics
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

    def _routed(self, env: Envelope) -> tuple[str, Envelope, Record] | None:
        """(topic, envelope, record) to produce for ``env``: as it is, or as poison when Kafka
        would refuse it as it is; None when no listener could read it anywhere."""
        problems: list[str] = []
        named = env.headers.get(ROUTE_CLUSTER)
        if named is not None and named not in self.clusters:
            problems.append(
                f"it names cluster {named[:100]!r}, which the application does not have "
                f"(it has {', '.join(sorted(self.clusters))})"
            )
        topic = self.naming.topic_of(env)
        problem = None if topic in self._topics else topic_problem(topic)  # known topics: valid
        if problem is not None:
            problems.append(problem)
            topic = self.naming.topic_for(env.name)  # where the listeners of its name read
            if topic_problem(topic) is not None:
                self.pass_over(env, f"{problem}, and so is the topic of its name")
                return None
        record, size = sized_record(env)
        too_big = size > self.cluster.max_request_size
        if too_big:
            problems.append(
                f"its record is {size} bytes, more than max_request_size "
                f"({self.cluster.max_request_size}): raise KafkaCluster(max_request_size=...) "
                "and the topic's max.message.bytes, then replay it from the outbox"
            )
        if problems:
            env = self.refuse(env, "; ".join(problems), drop_payload=too_big)
            record = to_record(env)
            if record_size(record) > self.cluster.max_request_size:  # the headers, then
                env = replace(env, headers={UNDECODABLE: env.headers[UNDECODABLE]})
                record = to_record(env)
        return topic, env, record

    async def _send_batches(
        self, producer: AIOKafkaProducer, mine: list[tuple[str, Envelope, Record]]
    ) -> list[asyncio.Future[Any]]:
        """Produce records as whole batches per partition (far cheaper than one ``send()`` per
        record), partitioned like Kafka's default partitioner (murmur2 of the key), in order."""
        futures: list[asyncio.Future[Any]] = []
        batches: dict[tuple[str, int], Any] = {}
        if tracing_enabled():
            for topic, env, record in mine:
                with relay_span(env, self.name, topic):  # the hand-over to the producer
                    await self._add(producer, batches, futures, topic, record)
        else:  # no span would record: the same without a context manager per record
            for topic, _env, record in mine:
                await self._add(producer, batches, futures, topic, record)
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
        record: Record,
    ) -> None:
        """Append one record to its partition's batch, sending the batch when it is full."""
        key, value, headers = record
        partition = self._key_partitions.get((topic, key)) if key is not None else None
        if partition is None:  # murmur2 in Python: once per key while the partitions stay
            partitions = self._partitions.get(topic)
            if partitions is None:
                partitions = sorted(await producer.partitions_for(topic))
                self._partitions[topic] = partitions
            partition = self._partitioner(key, partitions, partitions)
            if key is not None:
                if len(self._key_partitions) >= _KEY_PARTITIONS_MAX:
                    self._key_partitions.clear()
                self._key_partitions[(topic, key)] = partition
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
        await self.save_position(self._acked_upto)
        self._saved_at = time.monotonic()

    async def before_leaving(self) -> None:
        async with asyncio.timeout(2):  # what stays unacknowledged is resent by the next relay
            await self._settle(0)
            await self._save()

    def forget_inflight(self) -> None:
        """After a failure: resend everything after the stored position."""
        for _, _, acked in self._inflight:
            acked.cancel()
        self._partitions.clear()
        self._key_partitions.clear()
        self._inflight.clear()
        self._read_upto = self._acked_upto = self.position
