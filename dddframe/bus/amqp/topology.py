"""The RabbitMQ topology the framework declares.

- One durable topic exchange per application (``exchange``); routing key = event name, so a
  subscription may bind topic patterns instead of its names (``#``; AMQP wildcards stand for
  whole ``.``-separated words, and ``Order:Placed`` is one word).
- One durable queue per subscription, named after it (``<group>.<Controller.method>``), with
  single-active-consumer so one consumer at a time receives its messages in order (others of the
  group stand by and take over on failure); optionally a quorum queue.
- Delay queues ``<queue>.delay.<ms>``: messages wait there ``ms`` milliseconds (queue TTL) and are
  dead-lettered back to ``<queue>`` through the default exchange. No plugin needed.
- A dead-letter queue ``<queue>.dlq`` holding messages whose retries ran out, with the reason and
  attempts in headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika

from dddframe.bus.subscription import Subscription
from dddframe.errors import ConfigurationError

__all__ = ["Topology", "delay_queue_name", "dlq_name", "routing_keys", "topic_matches"]


def routing_keys(subscription: Subscription) -> list[str]:
    """The binding keys of a subscription's queue: ``listen(..., routing_keys=[...])`` patterns
    (``#``, ``Order:Placed``) or, by default, its event names."""
    keys = subscription.options.get("routing_keys")
    if keys is None:
        return sorted(subscription.event_names)
    if isinstance(keys, str) or not all(isinstance(k, str) for k in keys):  # type: ignore[attr-defined]
        raise ConfigurationError(
            f"{subscription.name}: routing_keys must be a list of str such as ['#']"
        )
    return [str(k) for k in keys]  # type: ignore[attr-defined]


def topic_matches(pattern: str, key: str) -> bool:
    """Whether a topic exchange routes ``key`` to a binding ``pattern``: words split on
    ``.``, ``*`` is exactly one word, ``#`` zero or more.

    >>> topic_matches("Order:*", "Order:Placed"), topic_matches("#", "a.b.c")
    (False, True)
    >>> topic_matches("a.*.c", "a.b.c"), topic_matches("a.#", "a"), topic_matches("*", "a.b")
    (True, True, False)
    """
    words, keys = pattern.split("."), key.split(".")
    # reachable[j]: the pattern's words so far can match the key's first j words
    reachable = [True] + [False] * len(keys)
    for word in words:
        if word == "#":
            for j in range(1, len(keys) + 1):
                reachable[j] = reachable[j] or reachable[j - 1]
        else:
            reachable = [False] + [
                reachable[j - 1] and word in ("*", keys[j - 1]) for j in range(1, len(keys) + 1)
            ]
    return reachable[-1]


def dlq_name(queue: str) -> str:
    return f"{queue}.dlq"


def delay_queue_name(queue: str, delay_ms: int) -> str:
    return f"{queue}.delay.{delay_ms}"


@dataclass
class Topology:
    exchange_name: str
    quorum: bool = False
    queue_prefix: str = ""

    def queue_of(self, subscription: str) -> str:
        """The queue of a subscription: ``queue_prefix`` + its name."""
        return self.queue_prefix + subscription

    async def exchange(
        self, channel: aio_pika.abc.AbstractChannel
    ) -> aio_pika.abc.AbstractExchange:
        return await channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )

    async def subscription_queue(
        self, channel: aio_pika.abc.AbstractChannel, name: str, routing_keys: list[str]
    ) -> aio_pika.abc.AbstractQueue:
        arguments: dict[str, Any] = {"x-single-active-consumer": True}
        if self.quorum:
            arguments["x-queue-type"] = "quorum"
        queue = await channel.declare_queue(name, durable=True, arguments=arguments)
        exchange = await self.exchange(channel)
        for key in routing_keys:
            await queue.bind(exchange, routing_key=key)
        await channel.declare_queue(dlq_name(name), durable=True)
        return queue

    async def delay_queue(
        self, channel: aio_pika.abc.AbstractChannel, queue: str, delay_ms: int
    ) -> str:
        name = delay_queue_name(queue, delay_ms)
        await channel.declare_queue(
            name,
            durable=True,
            arguments={
                "x-message-ttl": delay_ms,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue,
            },
        )
        return name
