"""Ownership across groups: separate worker pools per group deliver every subscription.

Real ``dddframe worker`` subprocesses on PostgreSQL and MariaDB; group ``g`` has two
subscriptions, group ``h`` three (tests/database_bus/worker_app.py with
WORKER_TEST_SECOND_GROUP=1).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import defaultdict
from typing import Any

import pytest

from dddframe import Application
from dddframe.bus.database.ownership import WORKER, Ownership
from dddframe.database import Database
from dddframe.outbox.leases import Leases
from dddframe.outbox.schema import create_schema
from dddframe.testing import reset_database
from tests.database_bus.test_workers import (
    ROOT,
    assert_once_in_order,
    effects,
    stderr_of,
    stop,
    writer,
)
from tests.database_bus.worker_app import Tick, WorkerEffect

SUBSCRIPTIONS = {
    "g.Recorder.first",
    "g.Recorder.second",
    "h.Recorder.first",
    "h.Recorder.second",
    "h.Recorder.third",
}


async def _deliver_with(app: Application, url: str, groups: list[str]) -> list[WorkerEffect]:
    workers: list[asyncio.subprocess.Process] = []
    for group in groups:
        workers.append(
            await asyncio.create_subprocess_exec(
                *_worker_argv(), "--group", group, **_worker_kwargs(url)
            )
        )
    try:
        # Write only once every worker has announced itself and the shares settled, so no
        # early worker delivers everything before the others count.
        leases = Leases(app.database, "test", 1.0)
        async with asyncio.timeout(30):
            while len(await leases.live(WORKER)) < len(groups):
                await asyncio.sleep(0.1)
        await asyncio.sleep(2 * 1.5)  # two leases (WORKER_TEST_LEASE_TTL): shares applied
        ids = [await app.engine.run(Tick()) for _ in range(3)]
        for i in ids:
            await app.engine.run(Tick(ticker_id=i, times=9))  # 30 events
        try:
            async with asyncio.timeout(60):
                while len(await effects(app)) < 30 * len(SUBSCRIPTIONS):
                    await asyncio.sleep(0.2)
        except TimeoutError:
            per: dict[str, int] = defaultdict(int)
            for e in await effects(app):
                per[e.subscription] += 1
            never = sorted(SUBSCRIPTIONS - set(per))
            raise AssertionError(
                f"delivered per subscription: {dict(per)}; never delivered: {never}\n"
                + await stderr_of(workers)
            ) from None
        await asyncio.sleep(0.5)  # nothing more arrives
        return await effects(app)
    finally:
        for w in workers:
            await stop(w)


def _worker_argv() -> list[str]:
    return [
        sys.executable,
        "-m",
        "dddframe.cli",
        "worker",
        "--app",
        "tests.database_bus.worker_app:make_app",
        "--log-level",
        "WARNING",
    ]


def _worker_kwargs(url: str) -> dict[str, Any]:
    return {
        "cwd": ROOT,
        "env": {**os.environ, "WORKER_TEST_DB_URL": url, "WORKER_TEST_SECOND_GROUP": "1"},
        "stdout": asyncio.subprocess.DEVNULL,
        "stderr": asyncio.subprocess.PIPE,
    }


@pytest.mark.parametrize("pool", [["g", "h"], ["g", "g", "h", "h"]], ids=["1x2", "2x2"])
async def test_a_worker_pool_per_group_delivers_every_subscription(
    server_db: str, pool: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKER_TEST_SECOND_GROUP", "1")
    async with writer(server_db) as app:
        found = await _deliver_with(app, server_db, pool)
    assert {e.subscription for e in found} == SUBSCRIPTIONS
    assert_once_in_order(found, 30)
    pids: dict[str, set[int]] = defaultdict(set)
    for e in found:
        pids[e.subscription.split(".")[0]].add(e.pid)
    assert not pids["g"] & pids["h"]  # each pool delivered only its own group


async def test_workers_that_disagree_on_a_groups_subscriptions_leave_none_unowned(
    sqlite_db: str,
) -> None:
    # A rolling deploy: the old worker knows g.X and g.Y, the new one g.X, g.Y and g.Z. Each
    # takes ceil(n / 2) of what it knows; if the new one holds X and Y, nobody's share has room
    # for Z, and Z must still be taken (within about a lease) instead of never.
    await reset_database(sqlite_db)
    db = Database(sqlite_db)
    try:
        await create_schema(db)
        ttl = 0.3
        old = Ownership(Leases(db, "old", ttl), ttl)
        new = Ownership(Leases(db, "new", ttl), ttl)
        old_subs = {"g.X": "g", "g.Y": "g"}
        new_subs = {**old_subs, "g.Z": "g"}
        held: dict[str, set[str]] = {"old": set(), "new": {"g.X", "g.Y"}}
        for name in held["new"]:
            assert await new.leases.acquire("dddframe.sub:" + name)
        for _ in range(12):
            for who, own, subs in (("old", old, old_subs), ("new", new, new_subs)):
                await own.announce(subs.values())
                for name in list(held[who]):
                    if not await own.leases.acquire("dddframe.sub:" + name):
                        held[who].discard(name)
                plan = await own.plan(subs, sorted(held[who]))
                for name in plan.release:
                    held[who].discard(name)
                    await own.leases.release("dddframe.sub:" + name)
                for name in plan.take:
                    if await own.leases.acquire("dddframe.sub:" + name):
                        held[who].add(name)
            await asyncio.sleep(ttl / 3)
        assert held["old"] | held["new"] == set(new_subs)
        assert not held["old"] & held["new"]
    finally:
        await db.dispose()
