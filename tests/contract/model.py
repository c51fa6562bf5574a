"""The probe of the older per-transport tests (tests/amqp, tests/database_bus, tests/core): the
counters domain is the conformance suite's (dddframe.testing.contract.model); this probe records
(aggregate, version, value, attempt) tuples, and misbehaves per aggregate as the test says."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

from dddframe import EventContext, Module, inject
from dddframe.testing.contract.model import (
    INCREMENTED,
    ContractCounter,
    CreateCounter,
    Increment,
    Incremented,
    counters_module,
)

__all__ = [
    "ContractCounter",
    "CreateCounter",
    "Increment",
    "Incremented",
    "Probe",
    "contract_modules",
]


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
    watchers = Module("watchers")
    watchers.bind(Probe, to=probe)
    watchers.controller(ContractController)
    watchers.listen(
        INCREMENTED,
        "ContractController.on_incremented",
        **listen_options,  # type: ignore[arg-type]
    )
    return [counters_module(), watchers]
