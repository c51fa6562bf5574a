"""A subscription: one listener bound to one or more event names, with its delivery policy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from dddframe.bus.retry import RetryPolicy
from dddframe.domain.envelope import Envelope

__all__ = ["DeadLetterPolicy", "Deliver", "Subscription"]

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
