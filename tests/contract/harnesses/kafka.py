"""The Kafka bus on the session's test broker (tansu, or DDDFRAME_KAFKA_BOOTSTRAP)."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer

from dddframe import Application
from dddframe.bus import EventBus, RetryPolicy
from dddframe.bus.codec import HEADER_PREFIX
from dddframe.bus.kafka import KafkaBus, KafkaCluster
from dddframe.bus.kafka.records import to_record
from dddframe.domain.envelope import Envelope
from dddframe.testing.contract import NotSupportedHere, PoisonKind, TransportHarness
from dddframe.testing.contract.harness import UNKNOWN_NAME
from tests.kafka import broker

Headers = list[tuple[str, bytes]]


def damaged_record(kind: PoisonKind, env: Envelope) -> tuple[bytes | None, bytes, Headers]:
    key, value, headers = to_record(env)
    if kind == "not_json":
        value = b'{"counter_id": "unterminated'
    elif kind == "no_envelope":
        headers = [(k, v) for k, v in headers if not k.startswith(HEADER_PREFIX)]
    elif kind == "unknown_name":
        headers = [
            (k, UNKNOWN_NAME.encode() if k == HEADER_PREFIX + "name" else v) for k, v in headers
        ]
    elif kind == "validation_failure":
        value = b'{"counter_id": "x", "value": "many", "by": null}'
    elif kind == "undecodable_header":
        headers = [*headers, ("x-broken", b"\xff\xfe not utf-8")]
    return key, value, headers


class KafkaHarness(TransportHarness):
    name = "kafka"

    def __init__(self, database_url: str) -> None:
        super().__init__(database_url)
        self.bootstrap = broker.bootstrap()
        self.prefix = broker.unique("c") + "."

    def bus(self, retry: RetryPolicy) -> EventBus:
        cluster = KafkaCluster(
            bootstrap=self.bootstrap,
            enable_idempotence=broker.idempotence(),
            partitions=1,  # every aggregate shares the partition: head-of-line effects show
            session_timeout=6.0,
        )
        return KafkaBus(
            clusters={"default": cluster},
            retry=retry,
            topic_prefix=self.prefix,
            group_prefix=self.prefix,
            lease_ttl=2,
        )

    async def inject_poison(self, app: Application, kind: PoisonKind, envelope: Envelope) -> None:
        bus = app.bus
        assert isinstance(bus, KafkaBus)
        key, value, headers = damaged_record(kind, envelope)
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            topic = bus.naming.topic_for(envelope.name)
            await producer.send_and_wait(topic, value, key=key, headers=headers)
        finally:
            await producer.stop()

    async def drop_connections(self, app: Application) -> None:
        bus = app.bus
        assert isinstance(bus, KafkaBus)
        clients: list[Any] = [getattr(c.consumer, "_client", None) for c in bus.consumers]
        clients += [getattr(p, "_client", None) for p in bus._producers.values()]
        dropped = 0
        for client in filter(None, clients):
            for conn in list(getattr(client, "_conns", {}).values()):
                conn.close()
                dropped += 1
        if not dropped:
            raise NotSupportedHere("no open Kafka connection found to drop")
