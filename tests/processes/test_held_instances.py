"""A step that keeps failing parks its process instance, and only that instance (SQLite,
PostgreSQL, MariaDB): the instance's later events and fired timers wait behind the failed
event whichever aggregate they come from, other instances go on although the same aggregate
feeds them, and once the failed event takes effect (a replayed dead letter) what waited runs
in arrival order, once each. An operator can give up on a purged head; a waiting entry that
fails in turn holds the instance and is retried as a schedule."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from dddframe import Application, NoRetry
from dddframe.bus.inprocess import InProcessBus
from dddframe.cli import app as cli
from dddframe.engine.schedules import FAILED, command_name
from dddframe.errors import NotFound
from dddframe.outbox.tables import process_waiting_table, schedules_table
from dddframe.processes.timers import ProcessRelease
from dddframe.testing import reset_database
from tests.processes.model import FAILING_TICKS, Note, Place, Tick, fulfilment_module
from tests.processes.reading import has_effect, read_effects, read_instance, wait_until

PROCESS = "Fulfilment"


@pytest.fixture
async def app(any_db: str) -> AsyncIterator[Application]:
    await reset_database(any_db)
    application = Application(
        [fulfilment_module(retry=NoRetry())], any_db, bus=InProcessBus(poll_interval=0.05)
    )
    FAILING_TICKS.update({666, 667})
    try:
        async with application:
            await application.create_schema()
            yield application
    finally:
        FAILING_TICKS.clear()
        FAILING_TICKS.add(666)


async def _waiting(app: Application) -> int:
    async with app.database.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(process_waiting_table)) or 0)


async def _trail(app: Application, key: str) -> str:
    instance = await read_instance(app, key)
    assert instance is not None
    return instance.trail


async def _failed_releases(app: Application) -> list[Any]:
    async with app.database.connect() as conn:
        return list(
            await conn.execute(
                select(schedules_table.c.id).where(
                    schedules_table.c.command == command_name(ProcessRelease),
                    schedules_table.c.state == FAILED,
                )
            )
        )


async def test_a_failing_step_holds_its_instance_not_its_aggregate(app: Application) -> None:
    bad_order = await app.engine.run(Place(order_id="bad", payment_seconds=0.5))
    await app.engine.run(Place(order_id="good"))
    await app.drain()  # the instances exist before the ledger's events arrive
    # One ledger aggregate feeds both instances: its first event fails for good.
    await app.engine.run(Note(ticks=[("bad", 666), ("good", 1)]))
    await app.drain()  # (events of two aggregates have no order between them: fail first)
    await app.engine.run(Tick(aggregate_id=bad_order, n=2))  # another aggregate, same instance
    await app.drain()
    # The payment timer (due at 0.5 s) fires while the instance is held: it waits too.
    await wait_until(lambda: _has_waiting(app, 2))

    good, bad = await read_instance(app, "good"), await read_instance(app, "bad")
    assert good is not None and good.trail == "1," and good.held_by is None
    assert bad is not None and bad.trail == "" and bad.state == "awaiting_payment"
    (letter,) = await app.dead_letters.list()
    assert bad.held_by == letter.event_id and "tick 666" in (letter.error or "")
    (held,) = await app.held_processes()
    assert (held.process, held.key, held.held_by, held.waiting) == (
        PROCESS,
        "bad",
        letter.event_id,
        2,
    )
    effects = await read_effects(app)
    assert ("tick-2", "bad") not in effects and ("cancel", "bad") not in effects

    # The instance's other aggregate goes on being held; other instances are not.
    await app.engine.run(Tick(aggregate_id=bad_order, n=3))
    await app.engine.run(Note(ticks=[("good", 4)]))
    await app.drain()
    assert await _trail(app, "good") == "1,4,"
    assert await _waiting(app) == 3

    FAILING_TICKS.discard(666)
    assert await app.dead_letters.replay([letter.id]) == 1
    await wait_until(lambda: _completed(app, "bad"))
    bad = await read_instance(app, "bad")
    # In arrival order: the replayed event, tick 2, the timer (which completes the process);
    # tick 3 arrived after the timer and is dropped with the completed instance.
    assert bad is not None and bad.trail == "666,2,timeout," and bad.held_by is None
    assert bad.state == "cancelled" and bad.ticks == 2
    await wait_until(lambda: has_effect(app, ("cancel", "bad")))  # sent by the timer's step
    effects = await read_effects(app)
    for effect in ("tick-666", "tick-2", "cancel"):
        assert effects[(effect, "bad")] == 1, effect
    assert ("tick-3", "bad") not in effects
    assert await _waiting(app) == 0 and await app.held_processes() == []
    assert await app.dead_letters.list() == []


async def _has_waiting(app: Application, n: int) -> bool:
    return await _waiting(app) >= n


async def _completed(app: Application, key: str) -> bool:
    instance = await read_instance(app, key)
    return instance is not None and instance.held_by is None and instance.completed


async def test_an_operator_gives_up_on_a_purged_head_and_a_failing_entry_holds_in_turn(
    app: Application,
) -> None:
    order = await app.engine.run(Place(order_id="p"))
    await app.drain()
    await app.engine.run(Note(ticks=[("p", 666)]))
    await app.drain()
    await app.engine.run(Tick(aggregate_id=order, n=667))
    await app.engine.run(Tick(aggregate_id=order, n=5))
    await app.drain()
    (letter,) = await app.dead_letters.list()
    assert await app.dead_letters.purge([letter.id]) == 1
    (held,) = await app.held_processes(PROCESS)
    assert held.held_by == letter.event_id and held.waiting == 2  # purging does not release

    assert await app.release_process(PROCESS, "p") == letter.event_id
    # The first waiting entry (tick 667) fails in turn: its release is a failed schedule (the
    # process's NoRetry) and it holds the instance; what arrives now waits behind it.
    await wait_until(lambda: _failed_releases(app))
    await app.engine.run(Tick(aggregate_id=order, n=6))
    await app.drain()
    (held,) = await app.held_processes()
    assert held.held_by.startswith("waiting:") and held.waiting == 3
    assert await _trail(app, "p") == ""

    FAILING_TICKS.discard(667)
    ((release_id,),) = await _failed_releases(app)
    assert await app.retry_schedule(release_id) is True
    await wait_until(lambda: _released(app, "p"))
    assert await _trail(app, "p") == "667,5,6,"
    # The commands the released steps sent run after each commit (by the dispatcher).
    await wait_until(lambda: has_effect(app, ("tick-6", "p")))
    effects = await read_effects(app)
    assert [effects[(f"tick-{n}", "p")] for n in (666, 667, 5, 6)] == [0, 1, 1, 1]
    assert await _waiting(app) == 0

    assert await app.release_process(PROCESS, "p") is None  # not held: nothing to skip
    with pytest.raises(NotFound, match="Did you mean 'Fulfilment'"):
        await app.release_process("Fulfillment", "p")


async def _released(app: Application, key: str) -> bool:
    instance = await read_instance(app, key)
    return instance is not None and instance.held_by is None


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli, ["processes", *args, "--app", "tests.processes.model:make_app"]
    )
    return result.exit_code, result.stdout, result.stderr


async def test_the_cli_lists_and_releases_held_instances_showing_keys_as_data(
    sqlite_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.processes import model

    await reset_database(sqlite_db)
    monkeypatch.setenv(model.URL_ENV, sqlite_db)
    key = "[bold red]k[/]\x1b[2J\x07"
    app = model.make_app()
    async with app:
        await app.create_schema()
        order = await app.engine.run(Place(order_id=key))
        await app.drain()
        await app.engine.run(Tick(aggregate_id=order, n=666))
        await app.drain()
        await app.engine.run(Tick(aggregate_id=order, n=7))
        await app.drain()
        (letter,) = await app.dead_letters.list()

    code, out, _ = await asyncio.to_thread(_cli, "held")
    assert code == 0 and "1 held process instance(s)" in out and letter.event_id[:8] in out
    assert "[bold" in out and "\x1b" not in out and "\x07" not in out  # markup as text
    code, out, _ = await asyncio.to_thread(_cli, "held", "--json")
    (held,) = json.loads(out)["held"]
    assert code == 0 and held["key"] == key and held["waiting"] == 1
    status = await asyncio.to_thread(
        CliRunner().invoke, cli, ["status", "--app", "tests.processes.model:make_app"]
    )
    assert "1 process instance(s) held by a failed step" in status.stdout
    code, out, _ = await asyncio.to_thread(_cli, "release", PROCESS, key)
    assert code == 0 and f"skipped {letter.event_id}" in out and "\x1b" not in out
    code, _, err = await asyncio.to_thread(_cli, "release", PROCESS, key)
    assert code == 5 and "is not held; nothing to release" in err
    code, out, _ = await asyncio.to_thread(_cli, "release", PROCESS, key, "--json")
    assert code == 0 and json.loads(out) == {"released": None, "found": True}
    code, _, err = await asyncio.to_thread(_cli, "release", "Fulfillment", key)
    assert code == 5 and "Did you mean 'Fulfilment'?" in err
    code, _, _ = await asyncio.to_thread(_cli, "release", PROCESS)
    assert code == 2
    status = await asyncio.to_thread(
        CliRunner().invoke, cli, ["status", "--app", "tests.processes.model:make_app", "--json"]
    )
    assert json.loads(status.stdout)["held_instances"] == 0

    async with model.make_app(consume=False) as app:
        instance = await read_instance(app, key)
        assert instance is not None and instance.trail == "7," and instance.held_by is None


async def test_events_arriving_while_the_hold_is_released_are_each_applied_once_in_order(
    any_db: str,
) -> None:
    """Events for a held instance keep arriving from many aggregates while its dead letter is
    replayed and what waited is released: none is lost (stranded behind a hold that was just
    handed on), none runs twice, and the replayed event runs before all of them."""
    await reset_database(any_db)
    app = Application(
        [fulfilment_module(retry=NoRetry())],
        any_db,
        bus=InProcessBus(poll_interval=0.02, concurrency=4),
    )
    FAILING_TICKS.add(666)
    try:
        async with app:
            await app.create_schema()
            await app.engine.run(Place(order_id="c"))
            await app.drain()
            await app.engine.run(Note(ticks=[("c", 666)]))
            await app.drain()
            for n in range(1, 11):  # each from a ledger of its own
                await app.engine.run(Note(ticks=[("c", n)]))
            await wait_until(lambda: _has_waiting(app, 5))
            (letter,) = await app.dead_letters.list()
            FAILING_TICKS.discard(666)
            replay = asyncio.create_task(app.dead_letters.replay([letter.id]))
            for n in range(11, 31):
                await app.engine.run(Note(ticks=[("c", n)]))
            await replay
            await app.drain()
            await wait_until(lambda: _released(app, "c"))
            trail = [int(t) for t in (await _trail(app, "c")).split(",") if t]
            assert trail[0] == 666 and sorted(trail[1:]) == list(range(1, 31)), trail
            assert await _waiting(app) == 0
            for n in (666, *range(1, 31)):
                await wait_until(lambda n=n: has_effect(app, (f"tick-{n}", "c")))
            effects = await read_effects(app)
            assert all(effects[(f"tick-{n}", "c")] == 1 for n in (666, *range(1, 31)))
    finally:
        FAILING_TICKS.clear()
        FAILING_TICKS.add(666)
