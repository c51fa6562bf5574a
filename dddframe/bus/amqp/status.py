"""Subscription status on RabbitMQ, from queue depths.

For each subscription's queue (``queue_prefix`` + its name):

* ``position``: None (a queue has no position);
* ``lag_events``: the messages ready in its queue (messages a consumer holds unacknowledged,
  at most ``prefetch``, are not counted: RabbitMQ reports them apart);
* ``lag_seconds``: the age of the oldest of them, estimated from the outbox: with ``n`` ready
  the ``n``-th latest event of its names the relay has sent (queues deliver in publish order);
* ``retries_pending``: messages waiting in its delay queues ``<queue>.delay.<ms>`` that can be
  named (the delays of its retry policy when they are not random, and those the consumers in
  this process use), plus messages in ``<queue>.dlq`` waiting behind a dead letter;
* ``dead_letters``: the dead letters in ``<queue>.dlq``.

Queues are only declared passively (a missing one counts 0), so an operator process that does
not consume (``consume=False``) reads the same as the workers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence

import aio_pika
from sqlalchemy import select

from dddframe.bus.amqp.dead_letters import AmqpDeadLetters
from dddframe.bus.amqp.relay import RELAY_POSITION
from dddframe.bus.amqp.topology import Topology, delay_queue_name
from dddframe.bus.dead_letters import DeadLetterSelection
from dddframe.bus.retry import RetryPolicy
from dddframe.bus.subscription import Subscription
from dddframe.database import Database
from dddframe.outbox.status import SubscriptionStatus, SystemStatus, age, read_outbox
from dddframe.outbox.tables import PARKED_DEAD, PARKED_WAITING, outbox_table, positions_table

__all__ = ["AmqpStatus", "policy_delays_ms"]

_PROBED_ATTEMPTS = 30


def policy_delays_ms(policy: RetryPolicy) -> set[int]:
    """The delay-queue delays (ms) a retry policy leads to, when they are not random: each
    attempt's delay computed twice, kept when both agree."""
    delays: set[int] = set()
    for attempt in range(1, _PROBED_ATTEMPTS + 1):
        first, second = policy.next_delay(attempt), policy.next_delay(attempt)
        if first is None:
            break
        if first == second:
            delays.add(max(1, int(first * 1000)))
    return delays


class AmqpStatus:
    """Reads the status of every subscription of an AMQP bus."""

    def __init__(
        self,
        channel: Callable[[], Awaitable[aio_pika.abc.AbstractChannel]],
        topology: Topology,
        database: Callable[[], Database],
        subscriptions: Callable[[], Sequence[Subscription]],
        dead_letters: AmqpDeadLetters,
        local_delays: Callable[[str], Iterable[int]],
    ) -> None:
        self._channel = channel
        self.topology = topology
        self._database = database
        self._subscriptions = subscriptions
        self.dead_letters = dead_letters
        self._local_delays = local_delays

    async def read(self) -> SystemStatus:
        parked: dict[tuple[str, str], int] = {}
        for d in await self.dead_letters.select(DeadLetterSelection.listing(state=None)):
            parked[(d.subscription, d.state)] = parked.get((d.subscription, d.state), 0) + 1
        subs = sorted(self._subscriptions(), key=lambda s: s.name)
        depths: dict[str, tuple[int, int]] = {}
        channel = await self._channel()
        try:
            for sub in subs:
                queue = self.topology.queue_of(sub.name)
                ready, channel = await self._depth(channel, queue)
                delays = policy_delays_ms(sub.retry) | set(self._local_delays(sub.name))
                delayed = 0
                for ms in sorted(delays):
                    n, channel = await self._depth(channel, delay_queue_name(queue, ms))
                    delayed += n
                depths[sub.name] = (ready, delayed)
        finally:
            await channel.close()
        db = self._database()
        rows = []
        async with db.connect() as conn:
            outbox = await read_outbox(conn)
            sent = await conn.scalar(
                select(positions_table.c.position).where(
                    positions_table.c.subscription == RELAY_POSITION
                )
            )
            for sub in subs:
                ready, delayed = depths[sub.name]
                oldest = None
                if ready and sent is not None:
                    oldest = await conn.scalar(
                        select(outbox_table.c.occurred_at)
                        .where(
                            outbox_table.c.position <= int(sent),
                            outbox_table.c.name.in_(sorted(sub.event_names)),
                        )
                        .order_by(outbox_table.c.position.desc())
                        .offset(ready - 1)
                        .limit(1)
                    )
                rows.append(
                    SubscriptionStatus(
                        name=sub.name,
                        position=None,
                        lag_events=ready,
                        lag_seconds=age(outbox.at, oldest),
                        retries_pending=delayed + parked.get((sub.name, PARKED_WAITING), 0),
                        dead_letters=parked.get((sub.name, PARKED_DEAD), 0),
                        updated_at=None,
                    )
                )
        return SystemStatus(outbox.at, outbox.head, outbox.unsequenced, rows, outbox.relays)

    async def _depth(
        self, channel: aio_pika.abc.AbstractChannel, name: str
    ) -> tuple[int, aio_pika.abc.AbstractChannel]:
        """Messages ready in a queue (0 when it does not exist), and a usable channel (RabbitMQ
        closes the channel on a passive declare of a missing queue)."""
        try:
            queue = await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return 0, await self._channel()
        return int(queue.declaration_result.message_count or 0), channel
