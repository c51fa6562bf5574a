"""The unit of work: one AsyncSession, one transaction, aggregates and their events together."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

from sqlalchemy import insert, inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dddframe.domain.envelope import Envelope
from dddframe.domain.limits import check_headers, check_key
from dddframe.domain.model import Aggregate, Entity, RecordedEvent, _EventRecorder
from dddframe.engine.repository import Repository
from dddframe.ids import uuid7
from dddframe.outbox.records import envelope_to_row, utcnow
from dddframe.outbox.tables import inbox_table, outbox_table

__all__ = ["Claim", "UnitOfWork"]

A = TypeVar("A", bound=Aggregate)

log = logging.getLogger("dddframe.engine")


def _children(obj: Any) -> Iterator[Entity]:
    """Loaded Entity objects directly below ``obj`` (unloaded relationships are skipped)."""
    state = inspect(obj)
    unloaded = state.unloaded
    for rel in state.mapper.relationships:
        if rel.key in unloaded:
            continue
        value = state.dict.get(rel.key)
        if value is None:
            continue
        items = value.values() if isinstance(value, dict) else value
        if isinstance(items, Entity):
            yield items
        elif not isinstance(items, Aggregate):
            for item in items:
                if isinstance(item, Entity):
                    yield item


# Built once: the statements are the same for every commit (only the rows differ).
_OUTBOX_INSERT = insert(outbox_table)
_INBOX_INSERT = insert(inbox_table)


def _write(
    session: Session, outbox_rows: list[dict[str, Any]], inbox_rows: list[dict[str, Any]]
) -> None:
    """The end of a unit of work, inside the sync session: aggregate rows with their version
    checks, then all outbox rows (one INSERT), then the inbox rows, then COMMIT."""
    session.flush()
    if outbox_rows:
        session.execute(_OUTBOX_INSERT, outbox_rows)
    if inbox_rows:
        session.execute(_INBOX_INSERT, inbox_rows)
    session.commit()


class Claim(Protocol):
    """Asked first in a command's transaction whether the command may take effect (True), or
    took effect before (False: the command is skipped). A scheduled command claims its row."""

    async def claim(self, session: AsyncSession) -> bool: ...


current_unit_of_work: ContextVar[UnitOfWork | None] = ContextVar(
    "dddframe_unit_of_work", default=None
)
"""The unit of work of the command running in this task, if any."""


class UnitOfWork:
    """What a command changes: the session, the aggregates handed out and direct messages.

    It keeps strong references to every aggregate its repositories hand out, because
    SQLAlchemy's identity map holds clean objects weakly and events recorded on an aggregate
    could otherwise vanish with it.
    """

    def __init__(self, session: AsyncSession, headers: dict[str, str]) -> None:
        self.session = session
        self.headers = headers
        self._tracked: dict[int, Aggregate] = {}
        self.removed: list[Aggregate] = []
        self._messages: list[Envelope] = []
        self._inbox: list[tuple[str, str]] = []
        self._repositories: dict[type[Any], Repository[Any]] = {}
        self._before_commit: list[Callable[[AsyncSession], Awaitable[None]]] = []
        self._after_commit: list[Callable[[], None]] = []

    def repository(self, aggregate: type[A]) -> Repository[A]:
        repo = self._repositories.get(aggregate)
        if repo is None:
            repo = Repository(self, aggregate)
            self._repositories[aggregate] = repo
        return repo

    def track(self, aggregate: Aggregate) -> None:
        self._tracked[id(aggregate)] = aggregate

    def add_message(self, envelope: Envelope) -> None:
        """Write a direct message (no aggregate) to the outbox with this unit of work."""
        self._messages.append(envelope)

    def before_commit(self, write: Callable[[AsyncSession], Awaitable[None]]) -> None:
        """Run ``await write(session)`` when this unit of work commits, before its rows are
        flushed (for writes decided in synchronous domain code, such as a process manager's
        timers)."""
        self._before_commit.append(write)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once this unit of work has committed (not when it rolls back or
        is run again after a conflict); an error it raises is logged, not raised."""
        self._after_commit.append(callback)

    def record_inbox(self, consumer: str, message_id: str) -> None:
        """Record that ``consumer`` applied ``message_id``; a second commit of it fails."""
        self._inbox.append((consumer, message_id))

    def _aggregates(self) -> list[Aggregate]:
        found = dict(self._tracked)
        for obj in (*self.session.new, *self.session.dirty):
            if isinstance(obj, Aggregate):
                found.setdefault(id(obj), obj)
        return list(found.values())

    def _prepare(self) -> tuple[list[Envelope], list[_EventRecorder]]:
        """Bump versions and build one envelope per recorded event, in recording order."""
        envelopes: list[Envelope] = []
        recorders: list[_EventRecorder] = []
        base: dict[str, str] | None = None  # the command's headers, checked once
        for agg in self._aggregates():
            state = inspect(agg)
            changed = state.key is None or state.modified
            recorded: list[RecordedEvent] = list(agg._dddframe_events())
            stack: list[Any] = list(_children(agg))
            seen: set[int] = set()
            while stack:
                child = stack.pop()
                if id(child) in seen:
                    continue
                seen.add(id(child))
                cstate = inspect(child)
                changed = changed or cstate.key is None or cstate.modified
                events = child._dddframe_events()
                if events:
                    recorded.extend(events)
                    recorders.append(child)
                stack.extend(_children(child))
            if not recorded and not changed and agg not in self.removed:
                continue
            recorders.append(agg)
            recorded.sort(key=lambda r: r.order)
            old = agg.version or 0
            if agg not in self.removed:
                # One version step per event: each event has its own per-aggregate sequence.
                agg.version = old + max(1, len(recorded))
            agg_type, agg_id = agg.aggregate_type(), str(agg.id)
            if recorded:
                # The aggregate type was checked where the class was declared; an id the
                # user chose (not a UUID) may not fit the ordering key.
                if not isinstance(agg.id, uuid.UUID):
                    where = f"aggregate {agg_type!r}"
                    check_key(agg_id, where, aggregate_type=agg_type, what="aggregate id")
                if base is None:
                    base = check_headers(self.headers, "the command's headers")
            for i, rec in enumerate(recorded, start=1):
                # Event names and headers were checked where they were given (the event's
                # declaration, domain_event()); the merge is checked again.
                assert base is not None
                headers = (
                    check_headers({**base, **rec.headers}, f"event {rec.name!r}")
                    if rec.headers
                    else dict(base)
                )
                envelopes.append(
                    Envelope(
                        event_id=uuid7(),
                        name=rec.name,
                        payload_json=rec.payload_json,
                        aggregate_type=agg_type,
                        aggregate_id=agg_id,
                        aggregate_version=old + i,
                        event_version=rec.event_version,
                        headers=headers,
                    )
                )
        for msg in self._messages:
            envelopes.append(msg)
        return envelopes, recorders

    async def commit(self) -> list[Envelope]:
        """Flush aggregates, insert outbox (and inbox) rows and commit; return the envelopes.

        Events are cleared from the aggregates only after the commit succeeded.
        """
        while self._before_commit:
            await self._before_commit.pop(0)(self.session)
        for agg in self.removed:
            await self.session.delete(agg)
        envelopes, recorders = self._prepare()
        outbox_rows = [envelope_to_row(e) for e in envelopes]
        inbox_rows: list[dict[str, Any]] = []
        if self._inbox:
            now = utcnow()
            inbox_rows = [
                {"consumer": c, "message_id": m, "processed_at": now} for c, m in self._inbox
            ]
        # Flush, outbox and inbox rows and the commit in one call into the sync session: one
        # greenlet for the lot instead of one per step; the same statements, in this order.
        await self.session.run_sync(_write, outbox_rows, inbox_rows)
        for rec in recorders:
            rec._dddframe_clear_events()
        for callback in self._after_commit:
            try:
                callback()
            except Exception:
                log.exception("an after-commit callback failed (the commit stands)")
        return envelopes
