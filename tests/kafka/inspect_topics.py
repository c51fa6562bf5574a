"""Reading what is on a broker, for assertions (a group-less consumer reads topics to the end)."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from dddframe.bus.kafka.dead_letters import read_to_end


async def topics(bootstrap: str) -> set[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        return set(await consumer.topics())
    finally:
        await consumer.stop()


async def read_all(
    bootstrap: str, topic: str, timeout: float = 30
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` now, in offset order per partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    out: list[ConsumerRecord[bytes, bytes]] = []
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if tps:
            async for _tp, record in read_to_end(consumer, tps, timeout):
                out.append(record)
    finally:
        await consumer.stop()
    return out


async def counts(bootstrap: str, topic: str) -> dict[int, int]:
    """Records per partition (every partition of the topic listed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()
        parts = sorted(consumer.partitions_for_topic(topic) or ())
    finally:
        await consumer.stop()
    out = dict.fromkeys(parts, 0)
    for r in await read_all(bootstrap, topic):
        out[r.partition] += 1
    return out
