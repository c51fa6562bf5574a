"""A graceful hand-over between workers of one group is not a crash.

Two database buses of one group run in this process (each its own lease owner). The first
takes every subscription and is stopped mid-batch by listeners that wait on a gate: its
subscriptions are marked in flight. When the second joins, the first gives up half of them;
the lease must be released only once the pass ended and the position is stored, so the new
owner finds no in-flight mark and delivers in batches, not one event at a time as after a
crash. A real crash (SIGKILL) still leaves the mark: tests/database_bus/test_workers.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from dddframe import Application, Envelope, Module
from dddframe.bus.database import DatabaseBus
from tests.database_bus.backlog import Listener, all_at, fill_outbox, listeners_module

SUBSCRIPTIONS = 4
AGGREGATES = 4
VERSIONS = 30  # 120 events: a few batches of 50


class Gate:
    """Listeners wait here until the test opens it; what each subscription saw."""

    open = asyncio.Event()
    waiting: set[str] = set()
    seen: dict[str, list[tuple[str, int]]] = defaultdict(list)


def _waits_at_the_gate(name: str) -> Listener:
    async def on_tick(self: Any, event: Envelope) -> None:
        Gate.waiting.add(name)
        await Gate.open.wait()
        Gate.seen[name].append((event.aggregate_id, event.aggregate_version))

    return on_tick


def hand_over_module() -> Module:
    return listeners_module(
        "g", "HandOver:Tick", "HandOver", SUBSCRIPTIONS, _waits_at_the_gate, group="g"
    )


def worker(url: str) -> Application:
    bus = DatabaseBus(lease_ttl=1.0, run_interval=0.05, limit_per_run=50, concurrency=2)
    return Application([hand_over_module()], url, bus=bus)


async def _fill(url: str) -> None:
    await fill_outbox(
        url,
        (
            Envelope.new(
                "HandOver:Tick",
                "{}",
                aggregate_type="Ticker",
                aggregate_id=f"t{a}",
                aggregate_version=v,
            )
            for v in range(1, VERSIONS + 1)
            for a in range(AGGREGATES)
        ),
    )


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"gave up waiting for {what}") from None


async def test_a_second_worker_takes_over_lanes_without_a_crash_mark(
    any_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dddframe")
    Gate.open = asyncio.Event()
    Gate.waiting, Gate.seen = set(), defaultdict(list)
    await _fill(any_db)
    first, second = worker(any_db), worker(any_db)
    first_bus, second_bus = first.bus, second.bus
    assert isinstance(first_bus, DatabaseBus) and isinstance(second_bus, DatabaseBus)
    async with first:
        # Every subscription is mid-batch (marked in flight), its listeners held at the gate.
        await _until(lambda: _true(len(Gate.waiting) == SUBSCRIPTIONS), "every listener")
        async with second:
            await _until(
                lambda: _true(len(first_bus.runners) == SUBSCRIPTIONS // 2),
                "the first worker to give up half",
            )
            Gate.open.set()
            await _until(
                lambda: _true(len(second_bus.runners) == SUBSCRIPTIONS // 2),
                "the second worker to take its half",
            )
            assert not any(r.careful for r in second_bus.runners.values())
            await _until(
                lambda: all_at(first, SUBSCRIPTIONS, AGGREGATES * VERSIONS), "every position"
            )
    crashes = [r.getMessage() for r in caplog.records if "died while delivering" in r.message]
    assert crashes == []
    assert set(Gate.seen) == {f"g.HandOver.on_{i}" for i in range(SUBSCRIPTIONS)}
    for name, seen in Gate.seen.items():
        # Every event once, each aggregate in order: the new owner went on where the old
        # one stopped (its stored position), nothing delivered twice.
        assert len(seen) == AGGREGATES * VERSIONS, name
        per: dict[str, list[int]] = defaultdict(list)
        for aggregate, version in seen:
            per[aggregate].append(version)
        assert all(v == list(range(1, VERSIONS + 1)) for v in per.values()), name


async def _true(value: bool) -> bool:
    return value
