"""Worker processes: workers share a group; a listener that kills its worker is dead-lettered
after crash_limit crashes. (A SIGKILLed worker taken over without loss is the shipped
``WorkerSigkill`` fault scenario, tests/contract/test_faults_database.py.)"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import func, select, text

from dddframe import Application
from dddframe.database import Database
from dddframe.outbox.reader import PositionStore
from dddframe.outbox.tables import leases_table
from dddframe.testing import reset_database
from tests.database_bus.worker_app import Tick, WorkerEffect, make_app

ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def writer(url: str) -> AsyncIterator[Application]:
    os.environ["WORKER_TEST_DB_URL"] = url
    await reset_database(url)
    app = make_app(consume=False)
    async with app:
        await app.create_schema()
        yield app


async def start_worker(url: str, **env: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dddframe.cli",
        "worker",
        "--app",
        "tests.database_bus.worker_app:make_app",
        "--log-level",
        "WARNING",
        cwd=ROOT,
        env={**os.environ, "WORKER_TEST_DB_URL": url, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def effects(app: Application) -> list[WorkerEffect]:
    async with app.database.session() as s:
        return list((await s.scalars(select(WorkerEffect).order_by(WorkerEffect.id))).all())


async def wait_for(app: Application, count: int, timeout: float = 60) -> list[WorkerEffect]:
    async with asyncio.timeout(timeout):
        while len(found := await effects(app)) < count:
            await asyncio.sleep(0.1)
    return found


def assert_once_in_order(found: list[WorkerEffect], expected_per_sub: int) -> None:
    per: dict[tuple[str, str], list[int]] = defaultdict(list)
    for e in found:
        per[(e.subscription, e.aggregate_id)].append(e.version)
    subs = {s for s, _ in per}
    for sub in subs:
        total = sum(len(v) for (s, _), v in per.items() if s == sub)
        assert total == expected_per_sub, (sub, total)
    for versions in per.values():
        assert versions == list(range(1, len(versions) + 1)), versions


async def stderr_of(procs: list[asyncio.subprocess.Process]) -> str:
    """What the workers printed, to say why a wait timed out."""
    out = []
    for p in procs:
        if p.returncode is None:
            p.kill()
            await p.wait()
        assert p.stderr is not None
        out.append(f"worker {p.pid} exited {p.returncode}:\n{(await p.stderr.read()).decode()}")
    return "\n".join(out)


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), timeout=30)


async def test_two_workers_split_a_group(server_db: str) -> None:
    async with writer(server_db) as app:
        workers = [await start_worker(server_db), await start_worker(server_db)]
        try:
            try:
                async with asyncio.timeout(30):  # each takes one of the two subscriptions
                    while True:
                        async with app.database.connect() as conn:
                            owners = await conn.scalar(
                                select(func.count(func.distinct(leases_table.c.owner))).where(
                                    leases_table.c.name.like("dddframe.sub:%")
                                )
                            )
                        if owners == 2:
                            break
                        await asyncio.sleep(0.2)
            except TimeoutError:
                raise AssertionError(await stderr_of(workers)) from None
            ids = [await app.engine.run(Tick()) for _ in range(4)]
            for i in ids:
                await app.engine.run(Tick(ticker_id=i, times=25))
            found = await wait_for(app, 2 * 104)
            await asyncio.sleep(0.5)
            found = await effects(app)
        finally:
            for w in workers:
                await stop(w)
    assert_once_in_order(found, 104)
    pids_by_sub: dict[str, set[int]] = defaultdict(set)
    for e in found:
        pids_by_sub[e.subscription].add(e.pid)
    assert all(len(p) == 1 for p in pids_by_sub.values())  # one worker per subscription
    assert len({p for ps in pids_by_sub.values() for p in ps}) == 2  # and both worked


async def test_a_worker_whose_snapshot_predates_anothers_start_still_starts(
    server_db: str,
) -> None:
    # Two workers starting together both create the subscription's position. The slower one's
    # transaction may have begun before the faster one committed: under MariaDB's REPEATABLE
    # READ its plain re-read after the duplicate key still saw no row (the worker died with a
    # RecursionError at start-up). It must get the committed position instead.
    async with writer(server_db):
        pass
    first, second = Database(server_db), Database(server_db)
    try:
        async with first.connect() as early:
            await early.execute(text("SELECT COUNT(*) FROM dddframe_positions"))  # snapshot
            async with second.connect() as late:
                assert await PositionStore().load(late, "race", start=7) == 7
                await late.commit()
            assert await PositionStore().load(early, "race", start="earliest") == 7
            await early.commit()
    finally:
        await first.dispose()
        await second.dispose()


async def test_listener_that_kills_the_worker_is_dead_lettered(any_db: str) -> None:
    async with writer(any_db) as app:
        bad = await app.engine.run(Tick())
        good = await app.engine.run(Tick())
        await app.engine.run(Tick(ticker_id=good, times=3))
        await app.engine.run(Tick(ticker_id=bad, times=1))
        crashes = 0
        for _ in range(6):  # crash_limit=2: the event kills at most 2 workers per subscription
            proc = await start_worker(any_db, WORKER_TEST_CRASH=str(bad))
            try:
                code = await asyncio.wait_for(proc.wait(), timeout=8)
            except TimeoutError:
                await stop(proc)
                break
            assert code == 17
            crashes += 1
        letters = await app.dead_letters.list()
        waiting = await app.dead_letters.list(state="waiting")
        found = await effects(app)
    assert 1 <= crashes <= 4
    assert {d.error.split(":")[0] for d in letters if d.error} == {"WorkerCrashed"}
    # per listener: the bad ticker's first event is dead, its second waits behind it
    assert sorted((d.subscription, d.envelope.aggregate_version) for d in letters) == [
        ("g.Recorder.first", 1),
        ("g.Recorder.second", 1),
    ]
    assert sorted((d.subscription, d.envelope.aggregate_version) for d in waiting) == [
        ("g.Recorder.first", 2),
        ("g.Recorder.second", 2),
    ]
    assert {e.aggregate_id for e in found} == {str(good)}
    assert len(found) == 2 * 4
