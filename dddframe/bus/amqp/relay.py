"""The AMQP relay: outbox -> exchange in commit order, a row counts as sent only after its
publisher confirm.

It reads the outbox by position (the shared Sequencer, OutboxReader and PositionStore; position
``relay.amqp``), publishes a batch with publisher confirms — each publish awaits its own confirm,
which aio-pika matches by delivery tag, so no confirm can be credited to the wrong message
(final's racy matching) — and stores the batch's position only when all of them were confirmed.
A relay killed in between resends from the stored position: at least once. A lease keeps one
relay active however many processes run one.
"""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika

from dddframe.bus.amqp.messages import POSITION, to_message
from dddframe.bus.amqp.topology import Topology
from dddframe.database import Database
from dddframe.domain.envelope import Envelope
from dddframe.observability.tracing import relay_span
from dddframe.outbox.relay import OutboxRelay

__all__ = ["AmqpRelay"]

RELAY_POSITION = "relay.amqp"


class AmqpRelay(OutboxRelay):
    """Moves committed outbox events to the exchange. Started by :class:`AmqpBus`."""

    def __init__(
        self,
        url: str,
        topology: Topology,
        database: Database,
        *,
        owner: str,
        batch_size: int = 1000,
        poll_interval: float = 0.5,
        lease_ttl: float = 10.0,
    ) -> None:
        super().__init__(
            database,
            name=RELAY_POSITION,
            lease="dddframe.relay:amqp",
            owner=owner,
            batch_size=batch_size,
            poll_interval=poll_interval,
            lease_ttl=lease_ttl,
            initial_backoff=0.2,
        )
        self.url = url
        self.topology = topology
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._chan: aio_pika.abc.AbstractChannel | None = None

    async def _channel(self) -> aio_pika.abc.AbstractChannel:
        if self._connection is None or self._connection.is_closed:
            self._connection = await aio_pika.connect_robust(self.url)
            self._chan = None
        if self._chan is None or self._chan.is_closed:
            self._chan = await self._connection.channel(publisher_confirms=True)
        return self._chan

    async def close(self) -> None:
        self._chan = None
        conn, self._connection = self._connection, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def run_once(self) -> int:
        """Publish one batch and store its position once confirmed; returns how far it moved."""
        envelopes, upto = await self.read(self.position)
        if upto == self.position:
            return 0
        exchange = await self.topology.exchange(await self._channel())

        async def publish(env: Envelope) -> None:
            # A PRODUCER span per event, ended by its confirm.
            with relay_span(env, self.name, self.topology.exchange_name):
                extra = {POSITION: env.position} if env.position is not None else {}
                await exchange.publish(to_message(env, **extra), routing_key=env.name)

        # Each publish awaits its own confirm; gather pipelines them.
        await asyncio.gather(*(publish(env) for env in envelopes))
        moved = upto - self.position
        await self.save_position(upto)
        self.sent += len(envelopes)
        return moved
