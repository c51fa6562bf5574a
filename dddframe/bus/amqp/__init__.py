"""The AMQP bus on RabbitMQ: ``Application(..., bus=AmqpBus(url=...))`` or ``bus="amqp"``."""

from dddframe.bus.amqp.bus import AmqpBus
from dddframe.bus.amqp.dead_letters import AmqpDeadLetters

__all__ = ["AmqpBus", "AmqpDeadLetters"]
