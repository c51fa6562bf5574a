"""The relay's records into aiokafka batches, one per (topic, partition), sent in outbox order.

Records are partitioned like Kafka's default partitioner (murmur2 of the key, a random
partition without one) and appended to their partition's batch as soon as they are built, so
no record outlives the next one (records kept alive until a whole relay batch is sent were
promoted by the garbage collector, whose full collections then walk the whole heap). Batches
that fill are sent before the ones that did not, in the order they filled: per partition the
records reach the broker in the order they were added.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from dddframe.bus.kafka.records import Record

__all__ = ["Batches", "Partitioning"]

_KEY_PARTITIONS_MAX = 100_000  # per topic


class Partitioning:
    """The partitions of the topics a relay produces to (fetched by the relay, :meth:`learn`)
    and each key's partition, computed once per key while they stay (murmur2 runs in Python).
    :meth:`clear` after a failure: partitions are fetched again."""

    def __init__(self) -> None:
        self._partitions: dict[str, list[int]] = {}
        self._by_key: dict[str, dict[bytes, int]] = {}  # of self._partitions
        self._partitioner = DefaultPartitioner()

    def __contains__(self, topic: str) -> bool:
        return topic in self._partitions

    def learn(self, topic: str, partitions: set[int]) -> None:
        """Remember the partitions of ``topic``."""
        self._partitions[topic] = sorted(partitions)

    def partition(self, topic: str, key: bytes | None) -> int:
        """The partition of a record with ``key`` (a random one when it has none)."""
        partitions = self._partitions[topic]
        if key is None:
            return int(self._partitioner(key, partitions, partitions))
        by_key = self._by_key.get(topic)
        if by_key is None:
            by_key = self._by_key[topic] = {}
        found = by_key.get(key)
        if found is None:
            found = int(self._partitioner(key, partitions, partitions))
            if len(by_key) >= _KEY_PARTITIONS_MAX:
                by_key.clear()
            by_key[key] = found
        return found

    def clear(self) -> None:
        self._partitions.clear()
        self._by_key.clear()


class Batches:
    """One relay batch's records in aiokafka batches per (topic, partition); every topic added
    to must be known to ``partitioning``."""

    def __init__(self, producer: AIOKafkaProducer, partitioning: Partitioning) -> None:
        self._producer = producer
        self._partitioning = partitioning
        self._open: dict[tuple[str, int], BatchBuilder] = {}
        self._ready: list[tuple[str, int, BatchBuilder | Record]] = []  # full, or one record
        self.count = 0
        """How many records were added."""

    def add(self, topic: str, record: Record) -> None:
        """Append ``record`` to its partition's batch; a full batch is set aside to be sent."""
        key, value, headers = record
        partition = None
        if key is not None:  # the cached partition in line: this runs once per record
            by_key = self._partitioning._by_key.get(topic)
            if by_key is not None:
                partition = by_key.get(key)
        if partition is None:
            partition = self._partitioning.partition(topic, key)
        self.count += 1
        batch = self._open.get((topic, partition))
        if batch is not None:
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is not None:
                return
            if batch.record_count():
                self._ready.append((topic, partition, batch))
        batch = self._open[(topic, partition)] = self._producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
            self._ready.append((topic, partition, record))  # larger than a batch: alone

    async def send(self) -> list[asyncio.Future[Any]]:
        """Hand every batch to the producer: the full ones (and records larger than a batch,
        alone) in the order they filled, then each partition's last one. Returns a future per
        batch, done when the broker acknowledged it."""
        producer = self._producer
        futures: list[asyncio.Future[Any]] = []
        for topic, partition, batch in self._ready:
            if isinstance(batch, BatchBuilder):
                futures.append(await producer.send_batch(batch, topic, partition=partition))
            else:
                key, value, headers = batch
                futures.append(
                    await producer.send(topic, value, key=key, headers=headers, partition=partition)
                )
        for (topic, partition), batch in self._open.items():
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        self._ready.clear()
        self._open.clear()
        return futures
