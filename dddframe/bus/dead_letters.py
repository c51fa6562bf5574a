"""Dead letters on every transport: the parked event, the selection, the operator API.

A subscription parks an event it could not deliver: ``retry`` (waiting for its next attempt),
``dead`` (retries ran out: a dead letter) or ``waiting`` (a later event of the same aggregate
queued behind one of those, so order per aggregate holds). Operators list, show, replay and purge
dead letters through ``app.dead_letters`` or the CLI: :class:`DeadLetterOperations` is the
operator API of :class:`~dddframe.bus.protocol.DeadLetters` written once over one
:class:`DeadLetterSelection`; :class:`~dddframe.bus.dead_letter_store.DeadLetterStore` (the
``dddframe_parked`` table), the Kafka dead-letter topics and the AMQP dead-letter queues
implement its three primitives.
"""

from __future__ import annotations

import builtins
import traceback as _tb
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from dddframe.bus.codec import decode_envelope
from dddframe.domain.envelope import Envelope
from dddframe.errors import DeadLetterNotFound, InvalidArgument
from dddframe.outbox.tables import PARKED_DEAD, PARKED_RETRY, PARKED_WAITING

__all__ = [
    "PARKED_STATES",
    "DeadLetter",
    "DeadLetterOperations",
    "DeadLetterSelection",
    "Parked",
    "format_error",
    "oldest_first",
]

_MAX_ERROR = 2000


def format_error(exc: BaseException) -> tuple[str, str]:
    """(one-line reason, traceback) of an exception, for storage."""
    reason = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR]
    return reason, "".join(_tb.format_exception(exc))[-20000:]


@dataclass(frozen=True, slots=True)
class Parked:
    """One parked event of one subscription."""

    id: int
    subscription: str
    event_id: str
    position: int | None
    ordering_key: str
    name: str
    state: str
    attempts: int
    next_attempt_at: datetime | None
    error: str | None
    traceback: str | None
    created_at: datetime
    updated_at: datetime
    envelope_text: str

    @property
    def envelope(self) -> Envelope:
        return decode_envelope(self.envelope_text)


DeadLetter = Parked
"""A parked event in state ``dead``: what operators list, inspect and replay."""

DeadLetterT = TypeVar("DeadLetterT", bound=Parked)


PARKED_STATES = (PARKED_DEAD, PARKED_RETRY, PARKED_WAITING)


@dataclass(frozen=True, slots=True)
class DeadLetterSelection:
    """Which parked events an operator means; the one selection every method of every
    transport's :class:`~dddframe.bus.protocol.DeadLetters` takes (database rows, Kafka
    dead-letter topics, AMQP dead-letter queues).

    ``ids``: the ids ``list`` showed; ``subscription``; ``aggregate_id``; ``state``: ``dead``
    (dead letters), ``retry``, ``waiting`` (behind an earlier event of the aggregate) or None
    (any). :meth:`of` builds what ``replay``/``purge`` act on and refuses an empty selection,
    so that a forgotten filter never replays or deletes everything; :meth:`listing` builds what
    ``list`` shows (nothing named: all).

    >>> s = DeadLetterSelection.of([3, 4], subscription=None, aggregate_id="7", everything=False)
    >>> sorted(s.ids or ()), s.aggregate_id, s.state
    ([3, 4], '7', 'dead')
    >>> DeadLetterSelection.of(None, subscription=None, aggregate_id=None, everything=False)
    Traceback (most recent call last):
    ...
    dddframe.errors.InvalidArgument: Name the dead letters: ids, ... or everything=True
    """

    ids: frozenset[int] | None = None
    subscription: str | None = None
    aggregate_id: str | None = None
    everything: bool = False
    state: str | None = PARKED_DEAD

    def __post_init__(self) -> None:
        if self.ids is not None and not all(
            isinstance(i, int) and not isinstance(i, bool) for i in self.ids
        ):
            raise InvalidArgument(
                f"dead letter ids must be ints (as `list` shows them): {self.ids!r}"
            )
        for field_name in ("subscription", "aggregate_id"):
            value = getattr(self, field_name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidArgument(
                    f"{field_name} must be a non-empty str or None, not {value!r}"
                )
        if self.state is not None and self.state not in PARKED_STATES:
            raise InvalidArgument(
                f"state must be one of {', '.join(PARKED_STATES)} or None (any), not {self.state!r}"
            )

    @classmethod
    def of(
        cls,
        ids: Sequence[int] | None,
        *,
        subscription: str | None,
        aggregate_id: str | None,
        everything: bool,
    ) -> DeadLetterSelection:
        """What ``replay`` or ``purge`` act on: dead letters only, something must be named."""
        if ids is None and subscription is None and aggregate_id is None and not everything:
            raise InvalidArgument(
                "Name the dead letters: ids, a subscription, an aggregate id, or everything=True"
            )
        return cls(
            frozenset(ids) if ids is not None else None, subscription, aggregate_id, everything
        )

    @classmethod
    def listing(
        cls,
        *,
        subscription: str | None = None,
        aggregate_id: str | None = None,
        state: str | None = PARKED_DEAD,
        ids: Sequence[int] | None = None,
    ) -> DeadLetterSelection:
        """What ``list``, ``get`` and ``count`` show: everything the filters let through."""
        return cls(
            frozenset(ids) if ids is not None else None,
            subscription,
            aggregate_id,
            everything=True,
            state=state,
        )

    def matches(self, letter: Parked) -> bool:
        """Whether a parked event is selected (stores that scan: Kafka topics, AMQP queues)."""
        return (
            (self.ids is None or letter.id in self.ids)
            and (self.subscription is None or letter.subscription == self.subscription)
            and (self.aggregate_id is None or letter.ordering_key.endswith(f":{self.aggregate_id}"))
            and (self.state is None or letter.state == self.state)
        )


def oldest_first(letters: Iterable[DeadLetterT]) -> builtins.list[DeadLetterT]:
    """Sorted by when they were parked, then by id (the order every store lists in)."""
    return sorted(letters, key=lambda d: (d.created_at, d.id))


class DeadLetterOperations(ABC):
    """The operator API of :class:`~dddframe.bus.protocol.DeadLetters`, written once.

    A transport writes :meth:`select` (oldest first), :meth:`replay_selection` and
    :meth:`purge_selection`; ``list``, ``get``, ``count``, ``replay`` and ``purge`` build the one
    :class:`DeadLetterSelection` and call them.
    """

    @abstractmethod
    async def select(
        self, selection: DeadLetterSelection, *, limit: int | None = None
    ) -> builtins.list[DeadLetter]:
        """The parked events the selection matches, oldest first (at most ``limit``)."""

    @abstractmethod
    async def replay_selection(self, selection: DeadLetterSelection) -> int:
        """Make the selected dead letters due again (attempts reset); returns how many."""

    @abstractmethod
    async def purge_selection(self, selection: DeadLetterSelection) -> int:
        """Remove the selected dead letters for good; returns how many."""

    async def list(
        self,
        *,
        subscription: str | None = None,
        aggregate_id: str | None = None,
        state: str | None = PARKED_DEAD,
        limit: int = 100,
    ) -> builtins.list[DeadLetter]:
        """Dead letters (or, with ``state=None``, every parked event), oldest first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidArgument(f"limit must be an int >= 1, not {limit!r}")
        selection = DeadLetterSelection.listing(
            subscription=subscription, aggregate_id=aggregate_id, state=state
        )
        return await self.select(selection, limit=limit)

    async def get(self, dead_letter_id: int) -> DeadLetter:
        """One parked event by the id ``list`` showed."""
        found = await self.select(
            DeadLetterSelection.listing(ids=[dead_letter_id], state=None), limit=1
        )
        if not found:
            raise DeadLetterNotFound(
                f"No parked event with id {dead_letter_id}; it may have been replayed or "
                "purged. List them with `dddframe dead-letters list`."
            )
        return found[0]

    async def count(
        self, *, subscription: str | None = None, state: str | None = PARKED_DEAD
    ) -> int:
        return len(
            await self.select(DeadLetterSelection.listing(subscription=subscription, state=state))
        )

    async def replay(
        self,
        ids: Sequence[int] | None = None,
        *,
        subscription: str | None = None,
        aggregate_id: str | None = None,
        everything: bool = False,
    ) -> int:
        """Deliver dead letters again (attempts reset); returns how many.

        The subscription delivers them, then releases the events waiting behind them.
        """
        return await self.replay_selection(
            DeadLetterSelection.of(
                ids, subscription=subscription, aggregate_id=aggregate_id, everything=everything
            )
        )

    async def purge(
        self,
        ids: Sequence[int] | None = None,
        *,
        subscription: str | None = None,
        aggregate_id: str | None = None,
        everything: bool = False,
    ) -> int:
        """Delete dead letters for good; events waiting behind them are then delivered."""
        return await self.purge_selection(
            DeadLetterSelection.of(
                ids, subscription=subscription, aggregate_id=aggregate_id, everything=everything
            )
        )
