"""The AMQP bus on RabbitMQ: ``Application(..., bus=AmqpBus(url=...))`` or ``bus="amqp"``."""

from dddframe.errors import missing_extra

try:
    from dddframe.bus.amqp.bus import AmqpBus
    from dddframe.bus.amqp.dead_letters import AmqpDeadLetters
except ModuleNotFoundError as _exc:
    if (_exc.name or "").startswith("dddframe"):
        raise  # a bug of ours, not a missing extra
    raise missing_extra(_exc, "amqp", "The AMQP bus") from _exc


__all__ = ["AmqpBus", "AmqpDeadLetters"]
