"""The AMQP bus's listener options.

>>> AmqpListenerOptions(routing_keys=["shop.notice.*"]).given()
{'routing_keys': ('shop.notice.*',)}
>>> AmqpListenerOptions(routing_keys="shop.#")
Traceback (most recent call last):
...
dddframe.errors.ConfigurationError: option routing_keys='shop.#' is not valid: a list of ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from dddframe.bus.options import ListenerOptions, invalid_option
from dddframe.domain.limits import AMQP_NAME_MAX_BYTES, check_bytes

__all__ = ["AmqpListenerOptions"]


@dataclass(frozen=True, slots=True)
class AmqpListenerOptions(ListenerOptions):
    """``listen(..., routing_keys=[...])``: bind the subscription's queue with these topic
    patterns instead of its event names (None: its event names). The routing key is the
    event name, and AMQP wildcards stand for whole ``.``-separated words, so ``Order:*`` is
    not a wildcard: ``#`` takes every name, ``Order:Placed`` exactly one."""

    transport: ClassVar[str] = "the AMQP"

    routing_keys: Sequence[str] | None = None

    def __post_init__(self) -> None:
        keys = self.routing_keys
        if keys is None:
            return
        expected = "a list of non-empty str patterns such as ['#'] or ['Order:Placed']"
        if isinstance(keys, str | bytes) or not isinstance(keys, Sequence):
            raise invalid_option("routing_keys", keys, expected + " (one str is not a list)")
        if not keys or not all(isinstance(k, str) and k for k in keys):
            raise invalid_option("routing_keys", keys, expected)
        for k in keys:
            check_bytes(k, "routing key", AMQP_NAME_MAX_BYTES)
        object.__setattr__(self, "routing_keys", tuple(keys))
