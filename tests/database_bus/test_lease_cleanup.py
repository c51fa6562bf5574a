"""Leases after a worker stops: a graceful stop (SIGTERM) leaves no lease held and no row of
its own; a SIGKILLed worker's heartbeat rows are removed by the live workers."""

from __future__ import annotations

import asyncio
import signal

from sqlalchemy import select

from dddframe import Application
from dddframe.outbox.records import utcnow
from dddframe.outbox.tables import leases_table
from tests.database_bus.test_workers import start_worker, stderr_of, stop, writer

_t = leases_table


async def leases(app: Application) -> list[tuple[str, str | None, bool]]:
    """(name, owner, still live) of every lease row."""
    now = utcnow()
    async with app.database.connect() as conn:
        rows = (await conn.execute(select(_t.c.name, _t.c.owner, _t.c.expires_at))).all()
    out = []
    for name, owner, expires in rows:
        live = (
            owner is not None and expires is not None and expires.replace(tzinfo=now.tzinfo) > now
        )
        out.append((str(name), owner, live))
    return out


async def wait_until(
    app: Application, procs: list[asyncio.subprocess.Process], check: object
) -> None:
    try:
        async with asyncio.timeout(30):
            while not check(await leases(app)):  # type: ignore[operator]
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"{await leases(app)}\n{await stderr_of(procs)}") from None


async def test_a_graceful_stop_releases_every_lease_it_holds(any_db: str) -> None:
    async with writer(any_db) as app:
        worker = await start_worker(any_db)
        # Running: subscriptions, its heartbeat rows and the half-message check job are held.
        await wait_until(
            app,
            [worker],
            lambda rows: (
                {"dddframe.job:tx-check", "dddframe.sub:g.Recorder.first"}
                <= {n for n, _o, live in rows if live}
            ),
        )
        owner = next(o for n, o, _ in await leases(app) if n == "dddframe.job:tx-check")
        await stop(worker)  # SIGTERM
        assert worker.returncode == 0, await stderr_of([worker])
        rows = await leases(app)
    assert [r for r in rows if r[2] and r[0] != "dddframe.sequencer"] == []
    assert [n for n, o, _ in rows if o == owner] == []
    assert not [n for n, _, _ in rows if n.startswith(("dddframe.worker:", "dddframe.member:"))]


async def test_a_killed_workers_heartbeat_rows_do_not_pile_up(any_db: str) -> None:
    async with writer(any_db) as app:
        dead = await start_worker(any_db)
        await wait_until(
            app, [dead], lambda rows: any(n.startswith("dddframe.worker:") for n, _, _ in rows)
        )
        dead.send_signal(signal.SIGKILL)
        await dead.wait()
        own = {
            n
            for n, _, _ in await leases(app)
            if n.startswith(("dddframe.worker:", "dddframe.member:"))
        }
        assert own  # its heartbeat (and its membership of group g)
        live = await start_worker(any_db)
        try:
            await wait_until(app, [live], lambda rows: not own & {n for n, _, _ in rows})
        finally:
            await stop(live)
