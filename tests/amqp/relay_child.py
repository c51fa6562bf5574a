"""Child process: relay the outbox to RabbitMQ and die (SIGKILL) after the first publishes left
but before their confirms were processed."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import aio_pika.exchange

from dddframe import Application
from dddframe.bus.amqp import AmqpBus
from tests.contract.model import Probe, contract_modules

_original = aio_pika.exchange.Exchange.publish


async def publish_then_die(self: Any, message: Any, routing_key: str, **kw: Any) -> Any:
    sending = asyncio.ensure_future(_original(self, message, routing_key, **kw))
    await asyncio.sleep(0.2)
    assert sending is not None  # on the wire, confirm not yet handled by the relay
    os.kill(os.getpid(), signal.SIGKILL)


async def main(url: str, amqp_url: str, exchange: str) -> None:
    aio_pika.exchange.Exchange.publish = publish_then_die  # type: ignore[method-assign]
    bus = AmqpBus(amqp_url, exchange=exchange, queue_prefix=exchange + ".", poll_interval=0.05)
    async with Application(contract_modules(Probe()), url, bus=bus, consume=False) as app:
        await app.create_schema()
        await asyncio.sleep(30)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
