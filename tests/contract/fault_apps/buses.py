"""The buses the fault scenarios' child processes run (``DDDFRAME_FAULT_BUS``), one factory
per transport, configured by the ``FAULT_*`` variables the harness's ``child_env()`` sets."""

from __future__ import annotations

import os

from dddframe.bus import EventBus, IntervalRetry
from dddframe.bus.amqp import AmqpBus
from dddframe.bus.database import DatabaseBus
from dddframe.bus.kafka import KafkaBus, KafkaCluster

# Generous retries: a listener failing while the database restarts must not dead-letter.
RETRY = IntervalRetry(interval=0.2, limit=100)


def _relay_batch(default: int) -> int:
    return int(os.environ.get("DDDFRAME_FAULT_RELAY_BATCH", "") or default)


def database(relay: bool) -> EventBus:
    return DatabaseBus(
        retry=RETRY,
        run_interval=0.1,
        lease_ttl=1.5,
        limit_per_run=25,
        concurrency=4,
        crash_limit=10,
    )


def kafka(relay: bool) -> EventBus:
    from tests.kafka.broker import idempotence

    cluster = KafkaCluster(
        bootstrap=os.environ["FAULT_KAFKA_BOOTSTRAP"],
        enable_idempotence=idempotence(),
        session_timeout=3,
    )
    prefix = os.environ["FAULT_KAFKA_PREFIX"]
    return KafkaBus(
        clusters={"default": cluster},
        topic_prefix=prefix,
        group_prefix=prefix,
        retry=RETRY,
        relay=relay,
        relay_batch=_relay_batch(500),
        relay_save_interval=0,
        lease_ttl=1,
    )


def amqp(relay: bool) -> EventBus:
    exchange = os.environ["FAULT_AMQP_EXCHANGE"]
    return AmqpBus(
        os.environ["FAULT_AMQP_URL"],
        exchange=exchange,
        queue_prefix=exchange + ".",
        retry=RETRY,
        concurrency=4,
        relay=relay,
        relay_batch=_relay_batch(500),
        poll_interval=0.05,
        lease_ttl=1,
    )
