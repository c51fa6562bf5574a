"""The AMQP bus on RabbitMQ (the vhost of DDDFRAME_AMQP_URL)."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika

from dddframe import Application
from dddframe.bus import EventBus, RetryPolicy
from dddframe.bus.amqp import AmqpBus
from dddframe.bus.amqp.messages import to_message
from dddframe.bus.codec import HEADER_PREFIX
from dddframe.domain.envelope import Envelope
from dddframe.testing.contract import NotSupportedHere, PoisonKind, TransportHarness
from dddframe.testing.contract.harness import UNKNOWN_NAME
from tests.services import AMQP_URL


def damaged_message(kind: PoisonKind, env: Envelope) -> aio_pika.Message:
    message = to_message(env)
    headers: dict[str, Any] = dict(message.headers or {})
    body = message.body
    if kind == "not_json":
        body = b'{"counter_id": "unterminated'
    elif kind == "no_envelope":
        headers = {k: v for k, v in headers.items() if not k.startswith(HEADER_PREFIX)}
    elif kind == "unknown_name":
        headers[HEADER_PREFIX + "name"] = UNKNOWN_NAME
    elif kind == "validation_failure":
        body = b'{"counter_id": "x", "value": "many", "by": null}'
    elif kind == "undecodable_header":
        headers["x-broken"] = bytearray(b"\xff\xfe not utf-8")  # an AMQP byte array
    return aio_pika.Message(
        body=body,
        headers=headers,
        message_id=message.message_id,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


class AmqpHarness(TransportHarness):
    name = "amqp"

    def __init__(self, database_url: str) -> None:
        super().__init__(database_url)
        self.exchange = f"contract-{uuid.uuid4().hex[:8]}"

    def bus(self, retry: RetryPolicy) -> EventBus:
        # Queue names come from the subscriptions: the first start of a test empties them, a
        # restart within the test finds what the earlier application left.
        return AmqpBus(
            AMQP_URL,
            exchange=self.exchange,
            retry=retry,
            concurrency=4,
            poll_interval=0.05,
            queue_prefix=self.exchange + ".",
            purge_on_startup=self.starts == 1,
            lease_ttl=2,
        )

    async def inject_poison(self, app: Application, kind: PoisonKind, envelope: Envelope) -> None:
        connection = await aio_pika.connect(AMQP_URL)
        try:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.declare_exchange(
                self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            await exchange.publish(damaged_message(kind, envelope), routing_key=envelope.name)
        finally:
            await connection.close()

    async def drop_connections(self, app: Application) -> None:
        """Close the vhost's connections on the server (rabbitmqctl, as root on the broker host)."""
        ctl = shutil.which("rabbitmqctl")
        if ctl is None:
            raise NotSupportedHere("rabbitmqctl is not installed here: cannot close connections")
        vhost = unquote(urlsplit(AMQP_URL).path.lstrip("/")) or "/"
        proc = await asyncio.create_subprocess_exec(
            ctl,
            "close_all_connections",
            "-p",
            vhost,
            "dddframe contract: connection drop",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise NotSupportedHere(f"rabbitmqctl could not close connections: {err.decode()!r}")
