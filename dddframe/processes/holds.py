"""Held instances: a step that keeps failing parks its process instance, and only that.

When a step raises, its instance is *held* by that event: ``held_by`` is set to the event's id
in a transaction of its own, before the error goes back to the bus, which retries the event
and dead-letters it by the process's policies (``retry``, ``dead_letter``) like any listener's.
While the instance is held, its later events and its fired timers do not run: each is stored
in ``dddframe_process_waiting``, in the transaction that records the event in the inbox (or
claims the timer), in arrival order. Other instances go on, those fed by the same aggregate
too: a process subscription's dead letters do not block aggregates (``dead_letter`` defaults
to ``"continue"`` for processes; the instance hold keeps the order that matters, per
instance).

When the holding event is delivered (a retry, or an operator's replay of its dead letter),
its step hands the hold on in its own transaction: to the first waiting entry
(``held_by = "waiting:<id>"``) with a :class:`~dddframe.processes.timers.ProcessRelease`
schedule, or back to nobody. A release runs one waiting entry's step in the schedule's unit of
work (claimed once; retried by the process's policy; ``failed`` after its last retry, when
``dddframe schedules retry`` runs it again), removes the entry and hands on to the next, so
the entries run in order and the instance is free after the last. :func:`skip_head` (behind
``app.release_process`` and ``dddframe processes release``) gives up on what holds an
instance, for a dead letter that was purged and will not come back.

Every write here goes through the instance's version, so two of them never both commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from dddframe.bus.codec import decode_envelope, encode_envelope
from dddframe.domain.envelope import Envelope
from dddframe.engine.unit_of_work import UnitOfWork
from dddframe.outbox.records import as_utc, utcnow
from dddframe.outbox.tables import process_waiting_table as waiting_table

__all__ = [
    "WAITING",
    "HeldInstance",
    "Waiting",
    "count_waiting",
    "drop_waiting",
    "hand_on",
    "next_waiting",
    "park_event",
    "park_timer",
]

log = logging.getLogger("dddframe.processes")

WAITING = "waiting:"
"""The prefix of ``held_by`` when a waiting entry (not a bus event) holds the instance."""


@dataclass(frozen=True, slots=True)
class Waiting:
    """One entry waiting behind a held instance: an event (``event_id``, its envelope) or a
    fired timer (``timer``, ``token``)."""

    id: int
    event_id: str | None
    envelope_text: str | None
    timer: str | None
    token: str | None
    created_at: datetime

    @property
    def ref(self) -> str:
        """What ``held_by`` says while this entry holds the instance."""
        return f"{WAITING}{self.id}"

    def envelope(self) -> Envelope:
        assert self.envelope_text is not None, "a timer entry has no envelope"
        return decode_envelope(self.envelope_text)


@dataclass(frozen=True, slots=True)
class HeldInstance:
    """A held instance, as operators see it: what holds it and what waits behind it."""

    process: str
    key: str
    held_by: str
    waiting: int
    since: datetime | None
    """When the oldest waiting entry arrived (None when nothing waits)."""


async def next_waiting(
    session: AsyncSession, process: str, key: str, *, after: int = 0, limit: int = 1
) -> list[Waiting]:
    """The first ``limit`` entries waiting behind ``process``'s instance ``key`` (with ids
    above ``after``), oldest first."""
    t = waiting_table
    rows = await session.execute(
        select(t.c.id, t.c.event_id, t.c.envelope, t.c.timer, t.c.token, t.c.created_at)
        .where(t.c.process == process, t.c.instance == key, t.c.id > after)
        .order_by(t.c.id)
        .limit(limit)
    )
    return [
        Waiting(r.id, r.event_id, r.envelope, r.timer, r.token, as_utc(r.created_at) or utcnow())
        for r in rows
    ]


async def count_waiting(
    session: AsyncSession, process: str, keys: list[str]
) -> dict[str, tuple[int, datetime | None]]:
    """How many entries wait behind each of ``keys``, and since when."""
    if not keys:
        return {}
    t = waiting_table
    rows = await session.execute(
        select(t.c.instance, func.count(), func.min(t.c.created_at))
        .where(t.c.process == process, t.c.instance.in_(keys))
        .group_by(t.c.instance)
    )
    return {r[0]: (int(r[1]), as_utc(r[2])) for r in rows}


def _insert(row: dict[str, Any]) -> Callable[[AsyncSession], Any]:
    async def write(session: AsyncSession) -> None:
        await session.execute(insert(waiting_table).values(**row, created_at=utcnow()))

    return write


def park_event(uow: UnitOfWork, process: str, key: str, envelope: Envelope) -> None:
    """Store ``envelope`` behind the held instance ``key`` when ``uow`` commits."""
    row = {"process": process, "instance": key, "event_id": str(envelope.event_id)}
    uow.before_commit(_insert({**row, "envelope": encode_envelope(envelope)}))


def park_timer(uow: UnitOfWork, process: str, key: str, timer: str, token: str) -> None:
    """Store the fired timer ``timer`` (``token``) behind the held instance ``key``."""
    uow.before_commit(
        _insert({"process": process, "instance": key, "timer": timer, "token": token})
    )


def drop_waiting(uow: UnitOfWork, process: str, key: str, entry: int | None = None) -> None:
    """Remove the entry ``entry`` (or every entry) waiting behind ``key`` when ``uow`` commits."""
    t = waiting_table
    where = [t.c.process == process, t.c.instance == key]
    if entry is not None:
        where.append(t.c.id == entry)

    async def write(session: AsyncSession) -> None:
        await session.execute(delete(t).where(*where))

    uow.before_commit(write)


async def hand_on(
    uow: UnitOfWork,
    process: str,
    instance: Any,
    *,
    after: int = 0,
    release: Callable[[], None],
) -> None:
    """The step that held ``instance`` took effect (or was given up): hand the hold to the
    next waiting entry (``id`` above ``after``) and call ``release()`` to schedule its
    release, or free the instance. A completed instance drops what waits (it would be ignored
    one by one)."""
    key = str(instance.id)
    if instance.completed:
        if await next_waiting(uow.session, process, key, after=after):
            log.info("%s %r is completed; what waited behind it is ignored", process, key)
            drop_waiting(uow, process, key)
        instance.held_by = None
        return
    following = await next_waiting(uow.session, process, key, after=after)
    if following:
        instance.held_by = following[0].ref
        release()
    else:
        instance.held_by = None
