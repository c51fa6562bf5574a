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
import logging

import aio_pika

from dddframe.bus.amqp.messages import to_message
from dddframe.bus.amqp.topology import Topology
from dddframe.domain.envelope import Envelope
from dddframe.engine.database import Database
from dddframe.observability.tracing import relay_span
from dddframe.outbox.leases import Leases
from dddframe.outbox.reader import OutboxReader, PositionStore
from dddframe.outbox.sequencer import Sequencer

__all__ = ["AmqpRelay"]

log = logging.getLogger("dddframe.bus.amqp.relay")

RELAY_POSITION = "relay.amqp"


class AmqpRelay:
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
        self.url = url
        self.topology = topology
        self.database = database
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.position = 0
        self.sent = 0
        self.active = False
        self.wake = asyncio.Event()
        self._leases = Leases(database, owner, lease_ttl)
        self._lease = "dddframe.relay:amqp"
        self._reader = OutboxReader()
        self._positions = PositionStore()
        self._sequencer = Sequencer()
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._chan: aio_pika.abc.AbstractChannel | None = None

    async def run(self) -> None:
        backoff = 0.2
        try:
            while True:
                try:
                    if not await self._hold_lease():
                        await self._sleep(self._leases.ttl / 3)
                        continue
                    moved = await self.run_once()
                    backoff = 0.2
                    if not moved:
                        await self._sleep(self.poll_interval)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning(
                        "relay.amqp: %s; resending from %d in %.1fs", exc, self.position, backoff
                    )
                    await self._close()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            await self._close()
            if self.active:
                with contextlib.suppress(Exception):
                    await self._leases.release(self._lease)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.wake.wait()
        self.wake.clear()

    async def _hold_lease(self) -> bool:
        held = await self._leases.acquire(self._lease)
        if held and not self.active:
            async with self.database.connect() as conn:
                self.position = await self._positions.load(conn, RELAY_POSITION, start="earliest")
                await conn.commit()
            log.info("relay.amqp: active from position %d", self.position)
        self.active = held
        return held

    async def _channel(self) -> aio_pika.abc.AbstractChannel:
        if self._connection is None or self._connection.is_closed:
            self._connection = await aio_pika.connect_robust(self.url)
            self._chan = None
        if self._chan is None or self._chan.is_closed:
            self._chan = await self._connection.channel(publisher_confirms=True)
        return self._chan

    async def _close(self) -> None:
        self._chan = None
        conn, self._connection = self._connection, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def run_once(self) -> int:
        """Publish one batch and store its position once confirmed; returns how far it moved."""
        async with self.database.connect() as conn:
            await self._sequencer.sequence(conn)
            envelopes, upto = await self._reader.read(
                conn, after=self.position, limit=self.batch_size
            )
        if upto == self.position:
            return 0
        exchange = await self.topology.exchange(await self._channel())

        async def publish(env: Envelope) -> None:
            # A PRODUCER span per event, ended by its confirm.
            with relay_span(env, "relay.amqp", self.topology.exchange_name):
                await exchange.publish(to_message(env), routing_key=env.name)

        # Each publish awaits its own confirm; gather pipelines them.
        await asyncio.gather(*(publish(env) for env in envelopes))
        async with self.database.connect() as conn:
            await self._positions.save(conn, RELAY_POSITION, upto)
            await conn.commit()
        moved, self.position = upto - self.position, upto
        self.sent += len(envelopes)
        return moved
