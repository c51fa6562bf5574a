"""A subscription: one listener bound to one or more event names, with its delivery policy."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from dddframe.bus.retry import RetryPolicy, as_retry_policy
from dddframe.domain.envelope import Envelope
from dddframe.domain.limits import SUBSCRIPTION_MAX, check_name
from dddframe.errors import ConfigurationError

__all__ = ["DeadLetterPolicy", "Deliver", "DeliveryPolicy", "Subscription", "delivery_policy"]

_GROUP = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")

DeadLetterPolicy = Literal["block_aggregate", "continue"]
Deliver = Callable[[Envelope, int, "Subscription"], Awaitable[None]]
"""Calls the listener with an envelope and the attempt number (1 = first)."""


@dataclass(eq=False)
class Subscription:
    """What a bus delivers to: the name (``group.Controller.method``), the event names it wants,
    the delivery callable and its policies. Every transport consumes these, and listeners know
    nothing of transports.
    """

    name: str
    group: str
    listener: str
    event_names: frozenset[str]
    deliver: Deliver
    retry: RetryPolicy
    dead_letter: DeadLetterPolicy = "block_aggregate"
    timeout: float | None = None
    start: str | int = "earliest"
    options: dict[str, object] = field(default_factory=dict)

    def wants(self, envelope: Envelope) -> bool:
        return envelope.name in self.event_names


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """The checked delivery keywords of ``module.listen()`` and ``module.process()``."""

    group: str
    retry: RetryPolicy | None
    timeout: float | None
    dead_letter: DeadLetterPolicy | None
    start: str | int


def delivery_policy(
    where: str,
    *,
    name: str,
    group: str,
    retry: RetryPolicy | Callable[[int], float | None] | None,
    timeout: float | None,
    dead_letter: str | None,
    start: str | int,
) -> DeliveryPolicy:
    """Check the keywords every subscription takes; ``where`` and ``name`` (the part after
    ``group.`` in the subscription name) go into the messages."""
    if dead_letter not in (None, "block_aggregate", "continue"):
        raise ConfigurationError(
            f"{where}: dead_letter must be 'block_aggregate' or 'continue', not {dead_letter!r}"
        )
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise ConfigurationError(
            f"{where}: timeout must be a positive number of seconds, not {timeout!r}"
        )
    if start not in ("earliest", "latest") and (
        isinstance(start, bool) or not isinstance(start, int) or start < 0
    ):
        raise ConfigurationError(
            f"{where}: start must be 'earliest', 'latest' or an outbox position (an int >= 0), "
            f"not {start!r}"
        )
    if not isinstance(group, str) or not _GROUP.fullmatch(group):
        raise ConfigurationError(
            f"{where}: group {group!r} must be an identifier-like str (letters, digits, _ or -)"
        )
    check_name(f"{group}.{name}", "subscription name", SUBSCRIPTION_MAX, where=where)
    try:
        policy = as_retry_policy(retry) if retry is not None else None
    except TypeError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None
    return DeliveryPolicy(group, policy, timeout, dead_letter, start)  # type: ignore[arg-type]
