"""The application the fault scenarios run, in the test process (the writer) and in the child
processes they SIGKILL: ``dddframe worker --app dddframe.testing.contract.fault_app:make_app``
and ``dddframe relay --app ...``.

The children are configured by environment variables:

===========================  ==============================================================
``DDDFRAME_FAULT_DB``        the database URL
``DDDFRAME_FAULT_BUS``       ``package.module:factory``; ``factory(relay: bool)`` returns the bus
``DDDFRAME_FAULT_RELAY``     ``1`` (default) or ``0``: whether a worker also relays
``DDDFRAME_FAULT_DELAY``     seconds the listener sleeps per call (keeps a batch in flight)
``DDDFRAME_FAULT_KILL_AFTER``  SIGKILL the process right after its n-th new effect: a crash
                             after dispatch, before the position, offset or ack is saved
``DDDFRAME_FAULT_NO_INBOX``  ``1``: apply effects without the inbox (proves the check notices)
===========================  ==============================================================

The listener records each call (:func:`~dddframe.testing.contract.history.record_delivery`),
then applies its effect through ``ctx.run(ApplyEffect(...))``: the effect row and the inbox
entry commit together, so a redelivered event has no second effect.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import uuid

from sqlalchemy.orm import Mapped, mapped_column

from dddframe import (
    Aggregate,
    Application,
    Command,
    DomainEvent,
    EventContext,
    Module,
    Repository,
    UnitOfWork,
    inject,
)
from dddframe.bus import EventBus
from dddframe.database import Database
from dddframe.errors import ConfigurationError
from dddframe.testing.contract.history import record_delivery, record_effect

__all__ = [
    "EVENT_NAME",
    "SUBSCRIPTION",
    "ApplyEffect",
    "Bump",
    "FaultCounter",
    "RolledBack",
    "fault_modules",
    "load_bus",
    "make_app",
]

EVENT_NAME = "ContractFault:Bumped"
SUBSCRIPTION = "fault_watchers.FaultRecorder.on_bumped"


class Bumped(DomainEvent):
    __event_name__ = EVENT_NAME
    counter_id: uuid.UUID
    n: int


class FaultCounter(Aggregate):
    __tablename__ = "contract_fault_counters"
    n: Mapped[int] = mapped_column(default=0)

    def bump(self, times: int) -> None:
        for _ in range(times):
            self.n += 1
            self.domain_event(Bumped(counter_id=self.id, n=self.n))


class RolledBack(RuntimeError):
    """Raised by ``Bump(fail=True)`` after recording its events: the transaction rolls back."""


class Bump(Command):
    counter_id: uuid.UUID
    times: int = 1
    fail: bool = False


class ApplyEffect(Command):
    subscription: str
    event_id: str


class FaultRecorder:
    @inject
    def __init__(self, database: Database) -> None:
        self.database = database

    async def on_bumped(self, event: Bumped, ctx: EventContext) -> None:
        delay = float(os.environ.get("DDDFRAME_FAULT_DELAY", "0") or 0)
        if delay:
            await asyncio.sleep(delay)
        sequence = ctx.envelope.aggregate_version or 0
        await record_delivery(
            self.database,
            ctx.subscription,
            ctx.event_id,
            str(event.counter_id),
            sequence,
            ctx.attempt,
        )
        inbox = os.environ.get("DDDFRAME_FAULT_NO_INBOX") != "1"
        applied = await ctx.run(
            ApplyEffect(subscription=ctx.subscription, event_id=ctx.event_id), idempotent=inbox
        )
        if applied:  # None: a redelivery the inbox absorbed
            _count_and_maybe_die()


_applied = 0


def _count_and_maybe_die() -> None:
    """Count applied effects; die right after the n-th (``DDDFRAME_FAULT_KILL_AFTER``)."""
    global _applied
    _applied += 1
    kill_after = int(os.environ.get("DDDFRAME_FAULT_KILL_AFTER", "0") or 0)
    if kill_after and _applied >= kill_after:
        os.kill(os.getpid(), signal.SIGKILL)  # effect committed, position/offset/ack not yet


def fault_modules() -> list[Module]:
    """The writer's module (``Bump``) and the listener's (``ApplyEffect`` + the recorder)."""
    counters = Module("fault_counters")

    @counters.handles(Bump)
    async def bump(cmd: Bump, repo: Repository[FaultCounter]) -> int:
        counter = await repo.find(cmd.counter_id)
        if counter is None:
            counter = FaultCounter(id=cmd.counter_id, n=0)
            repo.add(counter)
        counter.bump(cmd.times)
        if cmd.fail:
            raise RolledBack(f"Bump of {cmd.counter_id} rolled back on purpose")
        return counter.n

    watchers = Module("fault_watchers")

    @watchers.handles(ApplyEffect)
    async def apply(cmd: ApplyEffect, uow: UnitOfWork) -> bool:
        record_effect(uow.session, cmd.subscription, cmd.event_id)
        return True

    watchers.controller(FaultRecorder)
    watchers.listen(EVENT_NAME, "FaultRecorder.on_bumped")
    return [counters, watchers]


def load_bus(spec: str, *, relay: bool) -> EventBus:
    """Build the bus from ``package.module:factory`` (called with ``relay=``)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(
            f"DDDFRAME_FAULT_BUS must look like 'package.module:factory', not {spec!r}"
        )
    factory = getattr(importlib.import_module(module_name), attr, None)
    if not callable(factory):
        raise ConfigurationError(f"{spec!r} names no callable bus factory")
    bus = factory(relay=relay)
    if not isinstance(bus, EventBus):
        raise ConfigurationError(f"{spec!r} returned {type(bus).__name__}, not an EventBus")
    return bus


def make_app(consume: bool = True, groups: list[str] | None = None) -> Application:
    """The child processes' application, configured by the ``DDDFRAME_FAULT_*`` variables."""
    url = os.environ.get("DDDFRAME_FAULT_DB", "")
    spec = os.environ.get("DDDFRAME_FAULT_BUS", "")
    if not url or not spec:
        raise ConfigurationError(
            "the fault application needs DDDFRAME_FAULT_DB (a database URL) and "
            "DDDFRAME_FAULT_BUS ('package.module:factory')"
        )
    relay = os.environ.get("DDDFRAME_FAULT_RELAY", "1") == "1"
    return Application(
        fault_modules(), url, bus=load_bus(spec, relay=relay), consume=consume, groups=groups
    )
