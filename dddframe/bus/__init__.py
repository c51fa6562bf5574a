"""Event buses: the protocol, the shared delivery mechanics and one sub-package per transport.

Transports are chosen by name (``bus="inprocess"``) or by instance
(``bus=InProcessBus(concurrency=4)``). Named transports are imported only when chosen, so their
client libraries (aiokafka, aio-pika) stay optional.
"""

from __future__ import annotations

import importlib
from typing import Any

from dddframe.bus.context import EventContext, Inbox
from dddframe.bus.dead_letter_store import DeadLetterStore
from dddframe.bus.dead_letters import DeadLetter
from dddframe.bus.protocol import BusRuntime, EventBus
from dddframe.bus.retry import (
    CustomRetry,
    ExponentialRetry,
    IntervalRetry,
    LimitRetry,
    NoRetry,
    RetryPolicy,
    as_retry_policy,
)
from dddframe.bus.subscription import Subscription
from dddframe.errors import ConfigurationError, MissingDependency, close_matches

__all__ = [
    "TRANSPORTS",
    "BusRuntime",
    "CustomRetry",
    "DeadLetter",
    "DeadLetterStore",
    "EventBus",
    "EventContext",
    "ExponentialRetry",
    "Inbox",
    "IntervalRetry",
    "LimitRetry",
    "NoRetry",
    "RetryPolicy",
    "Subscription",
    "as_retry_policy",
    "resolve_bus",
]

TRANSPORTS: dict[str, str] = {
    "inprocess": "dddframe.bus.inprocess:InProcessBus",
    "database": "dddframe.bus.database:DatabaseBus",
    "kafka": "dddframe.bus.kafka:KafkaBus",
    "amqp": "dddframe.bus.amqp:AmqpBus",
}


def resolve_bus(spec: Any) -> EventBus:
    """A bus instance from a transport name or an instance."""
    if isinstance(spec, str):
        path = TRANSPORTS.get(spec)
        if path is None:
            raise ConfigurationError(
                f"Unknown bus {spec!r}: choose one of {', '.join(TRANSPORTS)} or pass a bus "
                "instance." + close_matches(spec, TRANSPORTS)
            )
        module, _, attr = path.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except MissingDependency:
            raise  # names the extra already
        except ImportError as exc:
            raise ConfigurationError(
                f"The {spec!r} bus needs an optional dependency: {exc}. Install dddframe[{spec}]."
            ) from exc
        bus: EventBus = cls()
        return bus
    if isinstance(spec, EventBus):
        return spec
    members = (
        "name",
        "default_retry",
        "start",
        "stop",
        "notify",
        "drain",
        "dead_letters",
        "status",
    )
    missing = [m for m in members if not hasattr(type(spec), m) and not hasattr(spec, m)]
    raise ConfigurationError(
        f"bus must be a transport name or an EventBus, not {spec!r}"
        + (
            f": it lacks {', '.join(missing)} (see dddframe.bus.protocol.EventBus)"
            if missing
            else ""
        )
    )
