"""The parking lot and dead-letter store in the database (``dddframe_parked``).

A subscription parks an event it could not deliver: ``retry`` (waiting for its next attempt),
``dead`` (retries ran out: a dead letter) or ``waiting`` (a later event of the same aggregate
queued behind one of those, so order per aggregate holds). Operators list, show, replay and purge
dead letters through ``app.dead_letters`` or the CLI: :class:`DeadLetterOperations` is the
operator API of :class:`~dddframe.bus.protocol.DeadLetters` written once over one
:class:`DeadLetterSelection`; :class:`DeadLetterStore` (here), the Kafka dead-letter topics and
the AMQP dead-letter queues implement its three primitives.
"""

from __future__ import annotations

import builtins
import traceback as _tb
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from dddframe.bus.codec import decode_envelope, encode_envelope
from dddframe.database import Database
from dddframe.domain.envelope import Envelope
from dddframe.errors import DeadLetterNotFound, InvalidArgument, NotStarted
from dddframe.outbox.records import utcnow
from dddframe.outbox.tables import PARKED_DEAD, PARKED_RETRY, PARKED_WAITING, parked_table

__all__ = [
    "PARKED_STATES",
    "DeadLetter",
    "DeadLetterOperations",
    "DeadLetterSelection",
    "DeadLetterStore",
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


def _row(r: object) -> Parked:
    m = r._mapping  # type: ignore[attr-defined]
    return Parked(
        id=m["id"],
        subscription=m["subscription"],
        event_id=m["event_id"],
        position=m["position"],
        ordering_key=m["ordering_key"],
        name=m["name"],
        state=m["state"],
        attempts=m["attempts"],
        next_attempt_at=m["next_attempt_at"],
        error=m["error"],
        traceback=m["traceback"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        envelope_text=m["envelope"],
    )


class DeadLetterStore(DeadLetterOperations):
    """Parked events in the database: the runners' bookkeeping and the operator's API (the
    dead letters of the in-process and database buses)."""

    def __init__(self, database: Database | None = None) -> None:
        self._database = database

    @property
    def database(self) -> Database:
        if self._database is None:
            raise NotStarted(
                "The dead-letter store is not bound to a database yet: start the Application "
                "(`async with Application(...) as app:`) and create the schema first."
            )
        return self._database

    def bind(self, database: Database) -> None:
        """Use ``database`` (a bus binds the store it is handed when it starts)."""
        self._database = database

    # -- used by subscription runners -------------------------------------------------------

    async def park(
        self,
        conn: AsyncConnection,
        subscription: str,
        envelope: Envelope,
        *,
        state: str,
        attempts: int,
        delay: float | None = None,
        error: BaseException | None = None,
    ) -> bool:
        """Insert a parked row; False if this event is parked for the subscription already."""
        now = utcnow()
        reason, tb = format_error(error) if error is not None else (None, None)
        try:
            async with conn.begin_nested():
                await conn.execute(
                    insert(parked_table).values(
                        subscription=subscription,
                        event_id=str(envelope.event_id),
                        position=envelope.position,
                        ordering_key=envelope.ordering_key,
                        name=envelope.name,
                        envelope=encode_envelope(envelope),
                        state=state,
                        attempts=attempts,
                        next_attempt_at=now + timedelta(seconds=delay) if delay else now,
                        error=reason,
                        traceback=tb,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            return False
        return True

    async def set_state(
        self,
        conn: AsyncConnection,
        parked_id: int,
        *,
        state: str,
        attempts: int,
        delay: float | None = None,
        error: BaseException | None = None,
    ) -> None:
        now = utcnow()
        values: dict[str, object] = {
            "state": state,
            "attempts": attempts,
            "next_attempt_at": now + timedelta(seconds=delay or 0),
            "updated_at": now,
        }
        if error is not None:
            values["error"], values["traceback"] = format_error(error)
        await conn.execute(
            update(parked_table).where(parked_table.c.id == parked_id).values(values)
        )

    async def remove(self, conn: AsyncConnection, parked_id: int) -> None:
        await conn.execute(delete(parked_table).where(parked_table.c.id == parked_id))

    async def heads(
        self, conn: AsyncConnection, subscription: str, *, include_dead: bool
    ) -> list[Parked]:
        """The first parked row of every ordering key of a subscription."""
        cond = parked_table.c.subscription == subscription
        if not include_dead:
            cond = and_(cond, parked_table.c.state != PARKED_DEAD)
        first = (
            select(func.min(parked_table.c.id).label("id"))
            .where(cond)
            .group_by(parked_table.c.ordering_key)
            .subquery()
        )
        q = select(parked_table).join(first, parked_table.c.id == first.c.id)
        return [_row(r) for r in (await conn.execute(q)).all()]

    async def first_of_key(
        self, conn: AsyncConnection, subscription: str, key: str, *, include_dead: bool
    ) -> Parked | None:
        q = select(parked_table).where(
            parked_table.c.subscription == subscription, parked_table.c.ordering_key == key
        )
        if not include_dead:
            q = q.where(parked_table.c.state != PARKED_DEAD)
        r = (await conn.execute(q.order_by(parked_table.c.id).limit(1))).first()
        return _row(r) if r is not None else None

    # -- operator API ---------------------------------------------------------------------

    @staticmethod
    def _where(selection: DeadLetterSelection) -> builtins.list[Any]:
        cond: builtins.list[Any] = []
        if selection.state is not None:
            cond.append(parked_table.c.state == selection.state)
        if selection.ids is not None:
            cond.append(parked_table.c.id.in_(sorted(selection.ids)))
        if selection.subscription is not None:
            cond.append(parked_table.c.subscription == selection.subscription)
        if selection.aggregate_id is not None:
            cond.append(parked_table.c.ordering_key.like(f"%:{selection.aggregate_id}"))
        return cond

    async def select(
        self, selection: DeadLetterSelection, *, limit: int | None = None
    ) -> builtins.list[DeadLetter]:
        q = select(parked_table).where(*self._where(selection)).order_by(parked_table.c.id)
        if limit is not None:
            q = q.limit(limit)
        async with self.database.connect() as conn:
            return [_row(r) for r in (await conn.execute(q)).all()]

    async def count(
        self, *, subscription: str | None = None, state: str | None = PARKED_DEAD
    ) -> int:
        selection = DeadLetterSelection.listing(subscription=subscription, state=state)
        q = select(func.count()).select_from(parked_table).where(*self._where(selection))
        async with self.database.connect() as conn:
            return int(await conn.scalar(q) or 0)

    async def replay_selection(self, selection: DeadLetterSelection) -> int:
        async with self.database.connect() as conn:
            result = await conn.execute(
                update(parked_table)
                .where(*self._where(selection))
                .values(state=PARKED_RETRY, attempts=0, next_attempt_at=utcnow())
            )
            await conn.commit()
        return int(result.rowcount or 0)

    async def purge_selection(self, selection: DeadLetterSelection) -> int:
        async with self.database.connect() as conn:
            result = await conn.execute(delete(parked_table).where(*self._where(selection)))
            await conn.commit()
        return int(result.rowcount or 0)
