"""The AMQP relay: outbox -> exchange in commit order, a row counts as sent only after its
publisher confirm.

It reads the outbox by position (the shared Sequencer, OutboxReader and PositionStore; position
``relay.amqp``), publishes a batch with publisher confirms — each publish (through aiormq, the
channel under aio-pika's) awaits its own confirm, matched by delivery tag, so no confirm can be
credited to the wrong message (final's racy matching) — and stores the batch's position only
when all of them were confirmed. A relay killed in between resends from the stored position: at
least once. A lease keeps one relay active however many processes run one.

An event AMQP cannot carry as it is — a header name longer than 255 bytes, a body larger than
``max_message_size`` — is published as poison (:meth:`OutboxRelay.refuse`), so every queue
bound to its name dead-letters it with the reason and the relay goes on. A name longer than a
routing key may be (255 bytes) cannot go through the exchange: it is published as poison
straight to the queues whose bindings match it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import replace

import aio_pika

from dddframe.bus.amqp.messages import POSITION, to_properties
from dddframe.bus.amqp.topology import Topology
from dddframe.database import Database
from dddframe.domain.envelope import Envelope
from dddframe.domain.limits import AMQP_NAME_MAX_BYTES, HEADERS_MAX_BYTES
from dddframe.observability.tracing import relay_span
from dddframe.outbox.relay import OutboxRelay

__all__ = ["AmqpRelay"]

RELAY_POSITION = "relay.amqp"
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
"""RabbitMQ 4's default ``max_message_size`` (3.x allows 128 MiB)."""


class AmqpRelay(OutboxRelay):
    """Moves committed outbox events to the exchange. Started by :class:`AmqpBus`."""

    def __init__(
        self,
        url: str,
        topology: Topology,
        database: Database,
        *,
        owner: str,
        queues_for: Callable[[str], list[str]] = lambda name: [],
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
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
        self.queues_for = queues_for  # event name -> the queues whose bindings match it
        self.max_message_size = max_message_size
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
        channel = await self._channel()
        exchange = (await self.topology.exchange(channel)).name
        # aio-pika's Exchange.publish builds a Message and its properties per publish; the
        # relay builds the same properties once and publishes through aiormq's channel,
        # which matches each confirm to its publish by delivery tag as before.
        underlay = await channel.get_underlay_channel()

        async def publish(env: Envelope) -> None:
            # A PRODUCER span per event, ended by its confirm.
            with relay_span(env, self.name, self.topology.exchange_name):
                extra = {POSITION: env.position} if env.position is not None else {}
                env = self._carriable(env)
                if len(env.name.encode()) <= AMQP_NAME_MAX_BYTES:
                    await underlay.basic_publish(
                        env.payload_json.encode(),
                        exchange=exchange,
                        routing_key=env.name,
                        properties=to_properties(env, **extra),
                        mandatory=True,
                    )
                    return
                env = self.refuse(
                    env,
                    f"its name is {len(env.name.encode())} bytes, longer than an AMQP "
                    f"routing key may be ({AMQP_NAME_MAX_BYTES}): it went straight to the "
                    "queues bound to it",
                )
                queues = self.queues_for(env.name)
                if not queues:
                    self.pass_over(env, "no queue of the application is bound to its name")
                for queue in queues:
                    await underlay.basic_publish(
                        env.payload_json.encode(),
                        exchange="",  # the default exchange
                        routing_key=queue,
                        properties=to_properties(env, **extra),
                        mandatory=True,
                    )

        # Each publish awaits its own confirm; gather pipelines them.
        await asyncio.gather(*(publish(env) for env in envelopes))
        moved = upto - self.position
        await self.save_position(upto)
        self.sent += len(envelopes)
        return moved

    def _carriable(self, env: Envelope) -> Envelope:
        """``env``, or ``env`` as poison when a header name or its size is more than AMQP
        carries (the header dropped, the payload dropped)."""
        problems: list[str] = []
        long = [k for k in env.headers if len(k.encode()) > AMQP_NAME_MAX_BYTES]
        if long:
            problems.append(
                f"header {long[0][:60]!r}... is {len(long[0].encode())} bytes, longer than "
                f"an AMQP header name may be ({AMQP_NAME_MAX_BYTES})"
            )
            env = replace(env, headers={k: v for k, v in env.headers.items() if k not in long})
        header_bytes = sum(len(k.encode()) + len(v.encode()) for k, v in env.headers.items())
        if header_bytes > HEADERS_MAX_BYTES:  # a content header frame must fit one frame
            problems.append(
                f"its headers take {header_bytes} bytes, more than an AMQP frame carries "
                f"safely ({HEADERS_MAX_BYTES}); they were dropped"
            )
            env = replace(env, headers={})
            header_bytes = 0
        size = len(env.payload_json.encode()) + header_bytes
        too_big = size > self.max_message_size
        if too_big:
            problems.append(
                f"the message is {size} bytes, more than max_message_size "
                f"({self.max_message_size}): raise AmqpBus(max_message_size=...) and the "
                "broker's max_message_size, then replay it from the outbox"
            )
        if not problems:
            return env
        return self.refuse(env, "; ".join(problems), drop_payload=too_big)
