"""The Kafka bus runs the shared contract suite; dead letters live in the dead-letter topic."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from dddframe import Application
from dddframe.bus import EventBus, RetryPolicy
from dddframe.bus.kafka import KafkaBus, KafkaCluster
from dddframe.bus.kafka.records import to_record
from dddframe.domain.envelope import Envelope
from tests.contract.harness import DeadLetterView
from tests.kafka import broker


class KafkaHarness:
    name = "kafka"

    def __init__(self, url: str, request: Any) -> None:
        self.database_url = url
        self.bootstrap = broker.bootstrap()
        self.prefix = broker.unique("c") + "."

    def bus(self, retry: RetryPolicy) -> EventBus:
        return KafkaBus(
            clusters={
                "default": KafkaCluster(
                    bootstrap=self.bootstrap, enable_idempotence=broker.idempotence()
                )
            },
            retry=retry,
            topic_prefix=self.prefix,
            group_prefix=self.prefix,
            retry_prefix="retry-",
            fail_prefix="fail-",
            lease_ttl=2,
        )

    async def dead_letters(self, app: Application) -> list[DeadLetterView]:
        return [
            DeadLetterView(d.event_id, d.name, d.error or "", d.id)
            for d in await app.dead_letters.list()
        ]

    async def replay(self, app: Application, letters: Sequence[DeadLetterView]) -> None:
        await app.dead_letters.replay([d.ref for d in letters])

    async def inject_raw(self, app: Application, name: str, payload_json: str) -> str:
        bus = app.bus
        assert isinstance(bus, KafkaBus)
        env = Envelope.new(
            name,
            payload_json,
            aggregate_type="ContractCounter",
            aggregate_id="raw-" + name,
            aggregate_version=1,
        )
        key, value, headers = to_record(env)
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(
                bus.naming.topic_for(name), value, key=key, headers=headers
            )
        finally:
            await producer.stop()
        return str(env.event_id)


HARNESSES = {
    "kafka-postgresql": (KafkaHarness, "postgresql"),
}
