"""The small domain every contract scenario runs: counters that record their increments.

A counter emits ``Conformance:Incremented`` for every increment and ``Conformance:Noted`` for a
note; the listeners record what they saw in a :class:`Probe` and misbehave as the probe tells them
(fail a number of times, always fail, hang once). Importing this module declares the table
``dddframe_contract_counters`` and the two event names; applications that do not import it are
not affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from injector import inject
from sqlalchemy import insert
from sqlalchemy.orm import Mapped, mapped_column

from dddframe.app import Application, Module
from dddframe.bus.context import EventContext
from dddframe.bus.retry import RetryPolicy
from dddframe.domain.envelope import Envelope
from dddframe.domain.events import DomainEvent
from dddframe.domain.model import Aggregate
from dddframe.engine.command import Command
from dddframe.engine.repository import Repository
from dddframe.engine.unit_of_work import UnitOfWork
from dddframe.outbox.records import envelope_to_row
from dddframe.outbox.tables import outbox_table

__all__ = [
    "INCREMENTED",
    "NOTED",
    "ContractCounter",
    "ContractRollback",
    "CreateCounter",
    "Hold",
    "Increment",
    "IncrementAndFail",
    "Incremented",
    "Note",
    "Noted",
    "Probe",
    "Seen",
    "contract_modules",
    "held_id",
    "new_counters",
]

INCREMENTED = "Conformance:Incremented"
NOTED = "Conformance:Noted"


class Incremented(DomainEvent):
    __event_name__ = INCREMENTED
    counter_id: uuid.UUID
    value: int
    by: int


class Noted(DomainEvent):
    __event_name__ = NOTED
    counter_id: uuid.UUID
    text: str


class ContractCounter(Aggregate):
    __tablename__ = "dddframe_contract_counters"
    value: Mapped[int] = mapped_column(default=0)

    def increment(self, by: int) -> None:
        self.value += by
        self.domain_event(Incremented(counter_id=self.id, value=self.value, by=by))

    def note(self, text: str) -> None:
        self.domain_event(Noted(counter_id=self.id, text=text))


class CreateCounter(Command):
    counter_id: uuid.UUID | None = None


class Increment(Command):
    counter_id: uuid.UUID
    by: int = 1
    times: int = 1


class Note(Command):
    counter_id: uuid.UUID
    text: str


class IncrementAndFail(Command):
    """Increments, then raises :class:`ContractRollback`: the transaction rolls back."""

    counter_id: uuid.UUID
    times: int = 1


class Hold(Command):
    """Writes an Incremented event for the aggregate :func:`held_id` to the outbox, then waits
    inside the transaction until the probe releases ``gate``; commits, or rolls back if ``fail``.

    The outbox row exists (its id allocated) long before the commit, so transactions started
    later can commit first: the case a reader that follows ids instead of commits gets wrong.
    """

    gate: str
    fail: bool = False


async def new_counters(app: Application, n: int = 1) -> list[uuid.UUID]:
    """Create ``n`` counters (no events) and return their ids."""
    return [await app.engine.run(CreateCounter()) for _ in range(n)]


def held_id(gate: str) -> uuid.UUID:
    """The aggregate id of the event a :class:`Hold` command writes."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"dddframe-contract-held-{gate}")


class ContractRollback(RuntimeError):
    """Raised by the IncrementAndFail handler (and by Hold with fail=True) to roll back."""


@dataclass(frozen=True, slots=True)
class Seen:
    """One successful listener call."""

    listener: str
    aggregate_id: str
    version: int
    value: int
    attempt: int
    event_id: str


@dataclass
class Probe:
    """What the listeners saw, and how they should misbehave (shared with the scenario)."""

    seen: list[Seen] = field(default_factory=list)
    contexts: list[EventContext] = field(default_factory=list)
    fail_times: dict[str, int] = field(default_factory=dict)  # aggregate id -> failures left
    always_fail: set[str] = field(default_factory=set)
    fail_everything: bool = False
    hang_once: set[str] = field(default_factory=set)  # first call for it never returns
    always_hang: set[str] = field(default_factory=set)
    fail_versions: set[tuple[str, int]] = field(default_factory=set)  # (aggregate, version)
    fail_for: set[tuple[str, str]] = field(default_factory=set)  # (listener, aggregate)
    call_delay: float = 0.0
    attempts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    entered: dict[str, asyncio.Event] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def of(self, listener: str = "increments") -> list[Seen]:
        return [s for s in self.seen if s.listener == listener]

    def versions(self, aggregate_id: object, listener: str = "increments") -> list[int]:
        """Versions of one aggregate in the order the listener first saw them."""
        out: list[int] = []
        for s in self.of(listener):
            if s.aggregate_id == str(aggregate_id) and s.version not in out:
                out.append(s.version)
        return out

    def by_aggregate(self, listener: str = "increments") -> dict[str, list[int]]:
        out: dict[str, list[int]] = defaultdict(list)
        for s in self.of(listener):
            out[s.aggregate_id].append(s.version)
        return dict(out)

    def gate(self, name: str) -> asyncio.Event:
        self.entered.setdefault(name, asyncio.Event())
        return self.gates.setdefault(name, asyncio.Event())

    async def wait_entered(self, gate: str, *, timeout: float = 30.0) -> None:
        """Wait until a :class:`Hold` command is inside its transaction, waiting on ``gate``."""
        self.gate(gate)
        async with asyncio.timeout(timeout):
            await self.entered[gate].wait()

    async def wait_for(
        self, count: int, *, listener: str = "increments", timeout: float = 30.0
    ) -> None:
        """Wait until ``listener`` has ``count`` distinct events (redeliveries not counted)."""
        await self.wait_until(
            lambda: len({s.event_id for s in self.of(listener)}) >= count, timeout=timeout
        )

    async def wait_until(self, predicate: Callable[[], bool], *, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                # A predicate on dead letters changes without the probe noticing: poll too.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.2)

    async def record(self, listener: str, agg: str, value: int, ctx: EventContext) -> None:
        key = f"{listener}:{agg}"
        self.attempts[key] += 1
        self.attempts[agg] += listener == "increments"
        self.changed.set()
        if agg in self.hang_once and listener == "increments":
            self.hang_once.discard(agg)
            await asyncio.sleep(3600)
        if agg in self.always_hang:
            await asyncio.sleep(3600)
        if self.call_delay:
            await asyncio.sleep(self.call_delay)
        if self.fail_everything:
            raise RuntimeError(f"listener {listener} fails for everything")
        if agg in self.always_fail or (listener, agg) in self.fail_for:
            raise RuntimeError(f"listener always fails for {agg}")
        if self.fail_times.get(agg, 0) > 0:
            self.fail_times[agg] -= 1
            raise RuntimeError(f"planned failure for {agg}")
        version = ctx.envelope.aggregate_version
        if (agg, version or 0) in self.fail_versions:
            raise RuntimeError(f"listener fails for {agg} version {version}")
        self.seen.append(
            Seen(listener, agg, version or 0, value, ctx.attempt, str(ctx.envelope.event_id))
        )
        self.contexts.append(ctx)
        self.changed.set()


class ContractController:
    @inject
    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    async def on_incremented(self, event: Incremented, ctx: EventContext) -> None:
        await self.probe.record("increments", str(event.counter_id), event.value, ctx)

    async def on_incremented_too(self, event: Incremented, ctx: EventContext) -> None:
        await self.probe.record("auditor", str(event.counter_id), event.value, ctx)

    async def on_noted(self, event: Noted, ctx: EventContext) -> None:
        await self.probe.record("notes", str(event.counter_id), 0, ctx)


def counters_module(probe: Probe | None = None) -> Module:
    """The module whose commands create, increment and note counters (and, with a ``probe``,
    hold a transaction open on one of its gates)."""
    counters = Module("counters")

    @counters.handles(CreateCounter)
    async def create(cmd: CreateCounter, repo: Repository[ContractCounter]) -> uuid.UUID:
        counter = ContractCounter(id=cmd.counter_id) if cmd.counter_id else ContractCounter()
        repo.add(counter)
        return counter.id

    @counters.handles(Increment)
    async def increment(cmd: Increment, repo: Repository[ContractCounter]) -> int:
        counter = await repo.get(cmd.counter_id)
        for _ in range(cmd.times):
            counter.increment(cmd.by)
        return counter.value

    @counters.handles(Note)
    async def note(cmd: Note, repo: Repository[ContractCounter]) -> None:
        counter = await repo.get(cmd.counter_id)
        counter.note(cmd.text)

    @counters.handles(IncrementAndFail)
    async def increment_and_fail(
        cmd: IncrementAndFail, repo: Repository[ContractCounter], uow: UnitOfWork
    ) -> None:
        counter = await repo.get(cmd.counter_id)
        for _ in range(cmd.times):
            counter.increment(1)
        await uow.session.flush()
        raise ContractRollback(f"rolled back on purpose for {cmd.counter_id}")

    @counters.handles(Hold)
    async def hold(cmd: Hold, uow: UnitOfWork) -> None:
        payload = Incremented(counter_id=held_id(cmd.gate), value=1, by=1)
        env = Envelope.new(
            INCREMENTED,
            payload.model_dump_json(),
            aggregate_type="ContractCounter",
            aggregate_id=str(payload.counter_id),
            aggregate_version=1,
        )
        await uow.session.execute(insert(outbox_table), [envelope_to_row(env)])
        if probe is None:
            raise RuntimeError("Hold needs counters_module(probe): it waits on the probe's gates")
        probe.gate(cmd.gate)
        probe.entered[cmd.gate].set()
        await probe.gates[cmd.gate].wait()
        if cmd.fail:
            raise ContractRollback(f"held transaction {cmd.gate} rolled back on purpose")

    return counters


def contract_modules(
    probe: Probe,
    *,
    retry: RetryPolicy | Callable[[int], float | None] | None = None,
    auditor: bool = False,
    auditor_retry: RetryPolicy | Callable[[int], float | None] | None = None,
    auditor_start: str | int = "earliest",
    notes: bool = False,
    **listen_options: Any,
) -> list[Module]:
    """The counters module and the watchers module whose listeners report to ``probe``.

    ``retry`` and ``listen_options`` (``dead_letter``, ``timeout``, ``start``...) go to the
    ``increments`` listener; ``auditor`` adds a second subscription to the same event in another
    group (its own ``auditor_retry``), ``notes`` a listener of ``Conformance:Noted``.
    """
    counters = counters_module(probe)
    watchers = Module("watchers")
    watchers.bind(Probe, to=probe)
    watchers.controller(ContractController)
    watchers.listen(INCREMENTED, "ContractController.on_incremented", retry=retry, **listen_options)
    if auditor:
        audit = Module("auditors")
        audit.controller(ContractController)
        audit.listen(
            INCREMENTED,
            "ContractController.on_incremented_too",
            retry=auditor_retry,
            start=auditor_start,
        )
        if notes:
            watchers.listen(NOTED, "ContractController.on_noted")
        return [counters, watchers, audit]
    if notes:
        watchers.listen(NOTED, "ContractController.on_noted")
    return [counters, watchers]
