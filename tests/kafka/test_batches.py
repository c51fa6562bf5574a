"""The relay's batches: per partition the records reach the producer in the order added."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from dddframe.bus.kafka.batches import Batches, Partitioning
from dddframe.bus.kafka.records import Record


class FakeProducer:
    """What Batches uses of AIOKafkaProducer: batches of ``batch_size`` bytes, and the sends
    in the order they were made."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.sent: list[tuple[str, int, list[bytes]]] = []  # (topic, partition, values)

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        buffer = batch._build()
        values = [bytes(r.value or b"") for r in DefaultRecordBatch(bytes(buffer))]
        self.sent.append((topic, partition, values))
        return _done()

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None, headers: Any, partition: int
    ) -> Any:
        self.sent.append((topic, partition, [value]))
        return _done()


def _done() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


async def test_records_keep_their_order_per_partition_across_full_batches() -> None:
    producer = FakeProducer(batch_size=1024)
    partitioning = Partitioning()
    for topic in ("a", "b"):
        partitioning.learn(topic, {0, 1, 2, 3})
    batches = Batches(producer, partitioning)  # type: ignore[arg-type]
    added: list[tuple[str, bytes | None, bytes]] = []
    for i in range(300):
        topic, key = ("a", "b")[i % 2], str(i % 7).encode()
        value = (b"big-%d-" % i) + b"x" * (3000 if i == 150 else 40)  # one larger than a batch
        record: Record = (key, value, [("h", b"v")])
        batches.add(topic, record)
        added.append((topic, key, value))
    futures = await batches.send()
    assert batches.count == 300 and len(futures) == len(producer.sent)
    assert any(len(values) > 1 for _, _, values in producer.sent)  # batched
    assert sum(len(values) for _, _, values in producer.sent) == 300
    expected: dict[tuple[str, int], list[bytes]] = {}
    for topic, key, value in added:
        expected.setdefault((topic, partitioning.partition(topic, key)), []).append(value)
    got: dict[tuple[str, int], list[bytes]] = {}
    for topic, partition, values in producer.sent:
        got.setdefault((topic, partition), []).extend(values)
    assert got == expected  # same partition as Kafka's partitioner, same order


def test_a_key_keeps_its_partition_and_unkeyed_records_spread() -> None:
    partitioning = Partitioning()
    partitioning.learn("t", {0, 1, 2, 3})
    assert len({partitioning.partition("t", b"k") for _ in range(20)}) == 1
    assert len({partitioning.partition("t", None) for _ in range(200)}) > 1
    partitioning.clear()
    assert "t" not in partitioning
