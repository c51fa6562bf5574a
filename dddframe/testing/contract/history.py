"""Record what was committed and what listeners saw, then check the delivery guarantees.

A fault scenario (a SIGKILLed worker, a dropped broker connection, a restarted database) ends
with one question: given everything that committed, did every subscription see every event,
nothing that rolled back, in order per aggregate, with redeliveries absorbed by the inbox?
:func:`check_history` answers it from three lists and returns a :class:`HistoryReport`:

* ``committed``: what the outbox holds (event id, aggregate, per-aggregate sequence). The outbox
  is the truth: a writer killed or disconnected mid-commit does not know whether it committed.
* ``deliveries``: one row per call of the listener, written *before* its effect in the
  listener's own transaction (a call killed before that commit left no trace, and counts as
  nothing). Rows are ordered by when they were written.
* ``effects``: one row per applied effect, written by a command the listener runs with
  ``ctx.run()``, which records the inbox entry in the same transaction: a redelivery has no
  second effect.

>>> c = [Committed("e1", "a", 1), Committed("e2", "a", 2), Committed("e3", "b", 1)]
>>> d = [Delivery("e1", "a", 1), Delivery("e3", "b", 1), Delivery("e1", "a", 1),
...      Delivery("e2", "a", 2)]
>>> e = [Effect("e1"), Effect("e2"), Effect("e3")]
>>> report = check_history(c, d, e)
>>> (report.committed, report.delivered, report.duplicates, report.absorbed, report.lost)
(3, 3, 1, 1, 0)
>>> report.ok
True
>>> rolled_back = check_history(c, [*d, Delivery("x9", "a", 3)], [*e, Effect("x9")])
>>> (rolled_back.phantoms, rolled_back.ok)
(1, False)
>>> broken = check_history(c, [Delivery("e2", "a", 2), Delivery("e1", "a", 1)], [Effect("e1")])
>>> (broken.lost, broken.out_of_order, broken.ok)
(2, 1, False)
>>> for problem in broken.problems():
...     print(problem)
2 committed events have no effect (lost)
1 events of an aggregate were first delivered after a later one (out of order)

Across processes the lists live in two tables, ``contract_history_deliveries`` and
``contract_history_effects`` (:class:`HistoryDelivery`, :class:`HistoryEffect`, part of
``dddframe.Model.metadata``, so ``app.create_schema()`` creates them): :func:`record_delivery`
and :func:`record_effect` write them, :func:`read_history` reads them back with the committed
events of one event name from the outbox.

Results file
------------
Each fault scenario appends its counts to one JSON file, so the generated documentation can
show "crash points tried, events lost (0)" per transport. The path is ``$DDDFRAME_CONTRACT_RESULTS``
if set, else ``<pytest cache dir>/d/dddframe-contract/faults.json``. The format (version 1)::

    {"version": 1,
     "results": [
       {"scenario": "worker_sigkill",       # the scenario's name (FaultScenario.scenario)
        "transport": "database-sqlite",     # the harness's name
        "crash_points": 2,                  # faults injected: kills, drops, restarts
        "committed": 180, "rolled_back": 6, # events in the outbox; commands rolled back
        "delivered": 180,                   # distinct committed events the listener saw
        "deliveries": 231,                  # listener calls recorded (with duplicates)
        "duplicates": 51, "absorbed": 51,   # redeliveries, and those the inbox absorbed
        "unabsorbed": 0,                    # extra effects: a redelivery applied twice
        "lost": 0,                          # committed events without an effect
        "phantoms": 0,                      # delivered events that never committed
        "out_of_order": 0}]}                # first deliveries behind a later sequence

One entry per (scenario, transport); a later run replaces the earlier entry.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from sqlalchemy import Integer, String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from dddframe.database import Database
from dddframe.domain.model import Model
from dddframe.outbox.tables import outbox_table

__all__ = [
    "Committed",
    "Delivery",
    "Effect",
    "HistoryDelivery",
    "HistoryEffect",
    "HistoryReport",
    "check_history",
    "read_history",
    "record_delivery",
    "record_effect",
]


@dataclass(frozen=True, slots=True)
class Committed:
    """An event the outbox holds: it committed."""

    event_id: str
    aggregate_id: str
    sequence: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """One call of the listener (in the order they were recorded)."""

    event_id: str
    aggregate_id: str
    sequence: int


@dataclass(frozen=True, slots=True)
class Effect:
    """One applied effect of an event (the inbox should allow exactly one per event)."""

    event_id: str


@dataclass(frozen=True, slots=True)
class HistoryReport:
    """The counts of a history check; :attr:`ok` when nothing was lost, invented or reordered."""

    committed: int
    delivered: int
    deliveries: int
    duplicates: int
    absorbed: int
    unabsorbed: int
    lost: int
    phantoms: int
    out_of_order: int

    @property
    def ok(self) -> bool:
        return not (self.lost or self.phantoms or self.out_of_order or self.unabsorbed)

    def problems(self) -> list[str]:
        """What broke, in words (empty when :attr:`ok`)."""
        found = []
        if self.lost:
            found.append(f"{self.lost} committed events have no effect (lost)")
        if self.phantoms:
            found.append(f"{self.phantoms} delivered events never committed (rolled back?)")
        if self.out_of_order:
            found.append(
                f"{self.out_of_order} events of an aggregate were first delivered after a "
                "later one (out of order)"
            )
        if self.unabsorbed:
            found.append(f"{self.unabsorbed} redeliveries were applied again (inbox bypassed)")
        return found

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def check_history(
    committed: Iterable[Committed], deliveries: Iterable[Delivery], effects: Iterable[Effect]
) -> HistoryReport:
    """Check one subscription's history against what committed (see the module docstring)."""
    truth = {c.event_id: c for c in committed}
    calls = list(deliveries)
    per_event = Counter(d.event_id for d in calls)
    applied = Counter(e.event_id for e in effects)
    duplicates = sum(n - 1 for n in per_event.values())
    unabsorbed = sum(n - 1 for n in applied.values() if n > 1)
    first: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for d in calls:
        if d.event_id not in seen and d.event_id in truth:
            seen.add(d.event_id)
            first[d.aggregate_id].append(d.sequence)
    out_of_order = 0
    for sequences in first.values():
        highest = None
        for s in sequences:
            if highest is not None and s < highest:
                out_of_order += 1
            highest = s if highest is None else max(highest, s)
    return HistoryReport(
        committed=len(truth),
        delivered=len(seen),
        deliveries=len(calls),
        duplicates=duplicates,
        absorbed=max(duplicates - unabsorbed, 0),
        unabsorbed=unabsorbed,
        lost=sum(1 for event_id in truth if not applied.get(event_id)),
        phantoms=len(
            {e for e in per_event if e not in truth} | {e for e in applied if e not in truth}
        ),
        out_of_order=out_of_order,
    )


class HistoryDelivery(Model):
    """A listener call, recorded by :func:`record_delivery` in its own transaction."""

    __tablename__ = "contract_history_deliveries"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    subscription: Mapped[str] = mapped_column(String(255), index=True)
    event_id: Mapped[str] = mapped_column(String(36))
    aggregate_id: Mapped[str] = mapped_column(String(255))
    sequence: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    pid: Mapped[int] = mapped_column(Integer)


class HistoryEffect(Model):
    """An applied effect, written by :func:`record_effect` inside the listener's command."""

    __tablename__ = "contract_history_effects"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    subscription: Mapped[str] = mapped_column(String(255), index=True)
    event_id: Mapped[str] = mapped_column(String(36))
    pid: Mapped[int] = mapped_column(Integer)


async def record_delivery(
    database: Database,
    subscription: str,
    event_id: str,
    aggregate_id: str,
    sequence: int,
    attempt: int,
) -> None:
    """Write one delivery row and commit it (before the listener applies anything)."""
    async with database.session() as session:
        session.add(
            HistoryDelivery(
                subscription=subscription,
                event_id=event_id,
                aggregate_id=aggregate_id,
                sequence=sequence,
                attempt=attempt,
                pid=os.getpid(),
            )
        )
        await session.commit()


def record_effect(session: AsyncSession, subscription: str, event_id: str) -> None:
    """Add the effect row to ``session`` (the command's unit of work, with its inbox entry)."""
    session.add(HistoryEffect(subscription=subscription, event_id=event_id, pid=os.getpid()))


async def read_history(
    database: Database, subscription: str, event_name: str
) -> tuple[list[Committed], list[Delivery], list[Effect]]:
    """The committed events named ``event_name`` and ``subscription``'s deliveries and effects."""
    async with database.connect() as conn:
        rows = await conn.execute(
            select(
                outbox_table.c.event_id,
                outbox_table.c.aggregate_id,
                outbox_table.c.aggregate_version,
            ).where(outbox_table.c.name == event_name)
        )
        committed = [Committed(e, a or "", int(v or 0)) for e, a, v in rows]
        rows = await conn.execute(
            select(HistoryDelivery.event_id, HistoryDelivery.aggregate_id, HistoryDelivery.sequence)
            .where(HistoryDelivery.subscription == subscription)
            .order_by(HistoryDelivery.id)
        )
        deliveries = [Delivery(e, a, s) for e, a, s in rows]
        applied = await conn.scalars(
            select(HistoryEffect.event_id).where(HistoryEffect.subscription == subscription)
        )
        effects = [Effect(e) for e in applied]
    return committed, deliveries, effects
