"""The counters domain of the older per-transport tests (tests/amqp, tests/database_bus,
tests/core); the conformance suite uses dddframe.testing.contract.model instead."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy.orm import Mapped, mapped_column

from dddframe import (
    Aggregate,
    Command,
    DomainEvent,
    EventContext,
    Module,
    Repository,
    inject,
)


class Incremented(DomainEvent):
    __event_name__ = "Contract:Incremented"
    counter_id: uuid.UUID
    value: int
    by: int


class ContractCounter(Aggregate):
    __tablename__ = "contract_counters"
    value: Mapped[int] = mapped_column(default=0)

    def increment(self, by: int) -> None:
        self.value += by
        self.domain_event(Incremented(counter_id=self.id, value=self.value, by=by))


class CreateCounter(Command):
    counter_id: uuid.UUID | None = None


class Increment(Command):
    counter_id: uuid.UUID
    by: int = 1
    times: int = 1


@dataclass
class Probe:
    """What the listener saw, and how it should misbehave (shared with the test)."""

    seen: list[tuple[str, int, int, int]] = field(
        default_factory=list
    )  # (agg, version, value, attempt)
    contexts: list[EventContext] = field(default_factory=list)
    fail_times: dict[str, int] = field(default_factory=dict)  # aggregate id -> failures left
    always_fail: set[str] = field(default_factory=set)
    attempts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def by_aggregate(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = defaultdict(list)
        for agg, version, _value, _attempt in self.seen:
            out[agg].append(version)
        return out

    async def wait_for(self, count: int, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.seen) < count:
                self.changed.clear()
                await self.changed.wait()


class ContractController:
    @inject
    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    async def on_incremented(self, event: Incremented, ctx: EventContext) -> None:
        agg = str(event.counter_id)
        self.probe.attempts[agg] += 1
        if agg in self.probe.always_fail:
            raise RuntimeError(f"listener always fails for {agg}")
        if self.probe.fail_times.get(agg, 0) > 0:
            self.probe.fail_times[agg] -= 1
            raise RuntimeError(f"planned failure for {agg}")
        assert ctx.envelope.aggregate_version is not None
        self.probe.seen.append((agg, ctx.envelope.aggregate_version, event.value, ctx.attempt))
        self.probe.contexts.append(ctx)
        self.probe.changed.set()


def contract_modules(probe: Probe, **listen_options: object) -> list[Module]:
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

    watchers = Module("watchers")
    watchers.bind(Probe, to=probe)
    watchers.controller(ContractController)
    watchers.listen(
        "Contract:Incremented",
        "ContractController.on_incremented",
        **listen_options,  # type: ignore[arg-type]
    )
    return [counters, watchers]
