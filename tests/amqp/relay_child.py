"""Child process: relay the outbox to RabbitMQ and die (SIGKILL) after the first publishes left
but before their confirms were processed."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import aiormq.channel

from dddframe import Application
from dddframe.bus.amqp import AmqpBus
from tests.contract.model import Probe, contract_modules

# The relay publishes through aiormq's channel (with the properties aio-pika would build).
_original = aiormq.channel.Channel.basic_publish


async def publish_then_die(self: Any, body: bytes, **kw: Any) -> Any:
    sending = asyncio.ensure_future(_original(self, body, **kw))
    await asyncio.sleep(0.2)
    assert sending is not None  # on the wire, confirm not yet handled by the relay
    os.kill(os.getpid(), signal.SIGKILL)


async def main(url: str, amqp_url: str, exchange: str) -> None:
    aiormq.channel.Channel.basic_publish = publish_then_die  # type: ignore[method-assign]
    bus = AmqpBus(amqp_url, exchange=exchange, queue_prefix=exchange + ".", poll_interval=0.05)
    async with Application(contract_modules(Probe()), url, bus=bus, consume=False) as app:
        await app.create_schema()
        await asyncio.sleep(30)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
