"""The EventBus protocol every transport implements, and what the application hands it.

Besides delivering, every transport gives operators one view of itself (see
docs/adr/0010-one-transport-interface-for-operators.md):

* ``bus.dead_letters``: a :class:`DeadLetters` (list / get ("show") / count / replay / purge),
  every method selecting with one :class:`~dddframe.bus.dead_letters.DeadLetterSelection`,
  oldest first, with the events' real ids;
* ``await bus.status()``: a :class:`~dddframe.outbox.status.SystemStatus` whose
  :class:`~dddframe.outbox.status.SubscriptionStatus` rows say, per subscription, its
  position, lag in events and seconds, retries pending and dead letters.

Both work in a process that does not consume (``consume=False``: the CLI, an API process), so
``dddframe status``, ``dddframe dead-letters``, the status page and the Prometheus gauges are
right on every transport.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from dddframe.bus.listener import TxChecker
from dddframe.bus.retry import RetryPolicy
from dddframe.bus.subscription import Subscription
from dddframe.domain.envelope import Envelope
from dddframe.domain.events import DomainEvent, EventRegistry
from dddframe.outbox.status import RelayStatus, SubscriptionStatus, SystemStatus

if TYPE_CHECKING:
    from dddframe.bus.dead_letter_store import DeadLetterStore
    from dddframe.bus.dead_letters import DeadLetter, DeadLetterSelection
    from dddframe.database import Database
    from dddframe.engine.engine import Engine

__all__ = [
    "BusRuntime",
    "DeadLetters",
    "EventBus",
    "RelayStatus",
    "SubscriptionStatus",
    "SystemStatus",
]


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
class DeadLetters(Protocol):
    """The dead letters of one transport, for operators (``app.dead_letters``).

    Every method turns its arguments into one
    :class:`~dddframe.bus.dead_letters.DeadLetterSelection` (ids, subscription, aggregate id,
    state) and :meth:`select` is the one query behind them; results are oldest first and carry
    the event's real ``event_id`` (from the stored envelope, or the record's or message's
    headers when its body cannot be decoded). ``replay`` and ``purge`` refuse an empty
    selection (a forgotten filter never acts on everything) and act on dead letters only.
    :class:`~dddframe.bus.dead_letters.DeadLetterOperations` implements all of it from three
    methods a transport writes (``select``, ``resend``, ``discard``).
    """

    async def select(
        self, selection: DeadLetterSelection, *, limit: int | None = None
    ) -> builtins.list[DeadLetter]:
        """The parked events the selection matches, oldest first (at most ``limit``)."""

    async def list(
        self,
        *,
        subscription: str | None = None,
        aggregate_id: str | None = None,
        state: str | None = "dead",
        limit: int = 100,
    ) -> builtins.list[DeadLetter]:
        """Dead letters (``state=None``: every parked event the transport can see)."""

    async def get(self, dead_letter_id: int) -> DeadLetter:
        """One dead letter by the id ``list`` showed ("show"); DeadLetterNotFound if gone."""

    async def count(self, *, subscription: str | None = None, state: str | None = "dead") -> int:
        """How many parked events match."""

    async def replay(
        self,
        ids: Sequence[int] | None = None,
        *,
        subscription: str | None = None,
        aggregate_id: str | None = None,
        everything: bool = False,
    ) -> int:
        """Deliver the selected dead letters again (attempts reset); returns how many."""

    async def purge(
        self,
        ids: Sequence[int] | None = None,
        *,
        subscription: str | None = None,
        aggregate_id: str | None = None,
        everything: bool = False,
    ) -> int:
        """Delete the selected dead letters for good; returns how many."""


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

    async def publish(
        self,
        name: str | DomainEvent,
        payload: Mapping[str, Any] | None = None,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Envelope:
        """Record a direct message (or an event instance) in the outbox; inside a unit of work
        it commits with it. A transport may add keyword-only options after ``headers`` (Kafka:
        ``cluster``), each with a default."""

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until every event committed before the call is delivered or dead-lettered."""

    @property
    def dead_letters(self) -> DeadLetters:
        """The transport's dead letters (available once started, also with consume=False)."""

    async def status(self) -> SystemStatus:
        """Every subscription's position, lag, retries pending and dead letters, and the
        outbox head and relays (available once started, also with consume=False)."""
