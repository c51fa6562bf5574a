"""The EventBus protocol every transport implements, and what the application hands it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from dddframe.bus.listener import TxChecker
from dddframe.bus.retry import RetryPolicy
from dddframe.bus.subscription import Subscription
from dddframe.domain.envelope import Envelope
from dddframe.domain.events import EventRegistry

if TYPE_CHECKING:
    from dddframe.bus.dead_letters import DeadLetterStore
    from dddframe.database import Database
    from dddframe.engine.engine import Engine

__all__ = ["BusRuntime", "EventBus"]


@dataclass
class BusRuntime:
    """Everything a bus needs from the application.

    ``consume``: whether this process delivers to listeners (an API process of the database bus
    may only write and notify; ``dddframe worker`` consumes). ``groups``: restrict consumption to
    these subscription groups (None = all).
    """

    database: Database
    engine: Engine
    registry: EventRegistry
    subscriptions: Sequence[Subscription]
    dead_letters: DeadLetterStore
    consume: bool = True
    groups: frozenset[str] | None = None
    tx_checkers: Mapping[str, TxChecker] = field(default_factory=dict)
    options: dict[str, object] = field(default_factory=dict)

    def active_subscriptions(self) -> list[Subscription]:
        if not self.consume:
            return []
        return [s for s in self.subscriptions if self.groups is None or s.group in self.groups]


@runtime_checkable
class EventBus(Protocol):
    """A transport that delivers committed outbox events to subscriptions.

    The engine calls :meth:`notify` after every commit; it is a wake-up hint only: delivery is
    driven by the outbox, so a lost hint delays but never loses an event.
    """

    name: str
    default_retry: RetryPolicy

    async def start(self, runtime: BusRuntime) -> None: ...

    async def stop(self) -> None: ...

    def notify(self, envelopes: Sequence[Envelope]) -> None: ...

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until every event committed before the call is delivered or dead-lettered."""
