"""Scheduled commands on SQLite, PostgreSQL and MariaDB: stored with the command that schedules
them (a rollback schedules nothing), run by a worker when due, in effect once even when two
dispatchers take the same schedule, cancelled, retried, failed with the reason."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from dddframe import Application, Command, Module, Repository
from dddframe.cli import app as cli
from dddframe.engine.schedules import ScheduleDispatcher, ScheduleRunner
from dddframe.errors import DomainError, InvalidArgument, ScheduleNotFound, UsageError
from dddframe.outbox.tables import schedules_table
from tests.core.model import Account, Deposit, OpenAccount, shopping_module


class ScheduleThenFail(Command):
    account_id: uuid.UUID


class Refuse(Command):
    pass


class Unhandled(Command):
    pass


class Refused(DomainError):
    pass


class SlowDeposit(Command):
    account_id: uuid.UUID


class _Gate:
    """Events of the running test's loop (each test has its own loop)."""

    entered: asyncio.Event
    release: asyncio.Event

    @classmethod
    def reset(cls) -> None:
        cls.entered, cls.release = asyncio.Event(), asyncio.Event()


def _dispatcher(app: Application, owner: str) -> ScheduleDispatcher:
    return ScheduleDispatcher(ScheduleRunner(app.schedules, app.engine), owner=owner)


def _modules() -> list[Module]:
    m = Module("scheduling")

    @m.handles(ScheduleThenFail)
    async def schedule_then_fail(cmd: ScheduleThenFail, app: Application) -> None:
        await app.schedule(Deposit(account_id=cmd.account_id, amount=1), after=timedelta(0))
        raise Refused("the command fails after scheduling")

    @m.handles(Refuse)
    async def refuse(cmd: Refuse) -> None:
        raise Refused("never")

    @m.handles(SlowDeposit)
    async def slow_deposit(cmd: SlowDeposit, accounts: Repository[Account]) -> None:
        account = await accounts.get(cmd.account_id)
        account.deposit(10)
        _Gate.entered.set()
        await _Gate.release.wait()

    return [shopping_module(), m]


async def _balance(app: Application, account_id: uuid.UUID) -> int:
    async with app.database.session() as s:
        account = await s.get(Account, account_id)
        assert account is not None
        return account.balance


async def _wait_for_state(app: Application, schedule_id: uuid.UUID, state: str) -> None:
    async with asyncio.timeout(20):
        while (await app.schedules.get(schedule_id)).state != state:
            await asyncio.sleep(0.05)


async def test_a_due_schedule_runs_once_with_the_correlation_id(any_db: str) -> None:
    async with Application(_modules(), any_db) as app:
        await app.drop_schema()
        await app.create_schema()
        account = await app.engine.run(OpenAccount())
        later = await app.schedule(
            Deposit(account_id=account, amount=100), after=timedelta(hours=1)
        )
        now = await app.schedule(Deposit(account_id=account, amount=5), after=timedelta(0))
        await _wait_for_state(app, now, "done")
        assert await _balance(app, account) == 5
        assert (await app.schedules.get(later)).state == "pending"  # not early
        assert [s.id for s in await app.schedules.list()] == [later]
        done = await app.schedules.get(now)
        assert done.attempts == 1 and done.error is None


async def test_a_rolled_back_command_schedules_nothing(any_db: str) -> None:
    async with Application(_modules(), any_db) as app:
        await app.drop_schema()
        await app.create_schema()
        account = await app.engine.run(OpenAccount())
        with pytest.raises(Refused):
            await app.engine.run(ScheduleThenFail(account_id=account))
        async with app.database.session() as s:
            assert await s.scalar(select(func.count()).select_from(schedules_table)) == 0


async def test_two_dispatchers_on_one_schedule_apply_it_once(any_db: str) -> None:
    """Both dispatchers read the same due rows (no lease here, as when a lease expired under
    a slow dispatcher): the claim in each command's transaction lets one run take effect."""
    async with Application(_modules(), any_db, consume=False) as app:
        await app.drop_schema()
        await app.create_schema()
        account = await app.engine.run(OpenAccount())
        ids = [
            await app.schedule(Deposit(account_id=account, amount=1), after=timedelta(0))
            for _ in range(20)
        ]
        first, second = _dispatcher(app, "a"), _dispatcher(app, "b")
        await asyncio.gather(first.run_once(), second.run_once())
        assert await _balance(app, account) == 20
        assert {(await app.schedules.get(i)).state for i in ids} == {"done"}
        assert {(await app.schedules.get(i)).attempts for i in ids} == {1}
        assert first.dispatched + second.dispatched == 20


async def test_a_cancel_during_the_run_is_refused_and_the_command_applies_once(
    any_db: str,
) -> None:
    """The claim holds the schedule's row for the command's transaction: a cancellation made
    while the command runs waits for it, then finds the schedule done (False)."""
    async with Application(_modules(), any_db, consume=False) as app:
        await app.drop_schema()
        await app.create_schema()
        account = await app.engine.run(OpenAccount())
        schedule_id = await app.schedule(SlowDeposit(account_id=account), after=timedelta(0))
        _Gate.reset()
        running = asyncio.create_task(_dispatcher(app, "a").run_once())
        await asyncio.wait_for(_Gate.entered.wait(), 10)
        cancelling = asyncio.create_task(app.cancel_schedule(schedule_id))
        await asyncio.sleep(0.3)
        assert not cancelling.done()  # waits on the claimed row
        _Gate.release.set()
        await running
        assert await cancelling is False
        assert (await app.schedules.get(schedule_id)).state == "done"
        assert await _balance(app, account) == 10


async def test_a_schedule_left_running_by_an_older_dispatcher_takes_effect_once(
    any_db: str,
) -> None:
    """Dispatchers of schema version 2 marked a row running before its command; the next
    dispatcher to take the lease puts such rows back and runs them."""
    async with Application(_modules(), any_db, consume=False) as app:
        await app.drop_schema()
        await app.create_schema()
        account = await app.engine.run(OpenAccount())
        schedule_id = await app.schedule(Deposit(account_id=account, amount=3), after=timedelta(0))
        async with app.database.connect() as conn:
            await conn.execute(
                schedules_table.update()
                .where(schedules_table.c.id == str(schedule_id))
                .values(state="running")
            )
            await conn.commit()
        assert await app.cancel_schedule(schedule_id) is False  # running: too late to cancel
        dispatcher = _dispatcher(app, "next")
        assert await dispatcher.run_once() == 0  # not pending: not due
        assert await dispatcher.recover() == 1
        await dispatcher.run_once()
        assert (await app.schedules.get(schedule_id)).state == "done"
        assert await _balance(app, account) == 3


async def test_cancel(any_db: str) -> None:
    async with Application(_modules(), any_db, consume=False) as app:
        await app.drop_schema()
        await app.create_schema()
        account = await app.engine.run(OpenAccount())
        at = datetime.now(UTC) + timedelta(seconds=1)
        schedule_id = await app.schedule(Deposit(account_id=account, amount=7), at=at)
        assert await app.cancel_schedule(schedule_id) is True
        assert await app.cancel_schedule(str(schedule_id)) is False  # cancelled already
        dispatcher = _dispatcher(app, "a")
        await asyncio.sleep(1.1)
        assert await dispatcher.run_once() == 0
        assert await _balance(app, account) == 0
        assert (await app.schedules.get(schedule_id)).state == "cancelled"
        with pytest.raises(ScheduleNotFound, match="schedules list"):
            await app.cancel_schedule(uuid.uuid4())
        with pytest.raises(InvalidArgument, match="is a UUID"):
            await app.cancel_schedule("<script>")


async def test_failures_are_recorded_and_domain_errors_are_not_retried(sqlite_db: str) -> None:
    async with Application(_modules(), sqlite_db, consume=False) as app:
        await app.create_schema()
        refused = await app.schedule(Refuse(), after=timedelta(0))
        async with app.database.connect() as conn:  # a command type this build no longer has
            await conn.execute(
                schedules_table.insert().values(
                    id=str(uuid.uuid4()),
                    command="shop.Gone\x1b[31m",
                    payload="{}",
                    headers="{}",
                    due_at=datetime.now(UTC),
                    state="pending",
                    attempts=0,
                    created_at=datetime.now(UTC),
                    updated_at=datetime.now(UTC),
                )
            )
            await conn.commit()
        await _dispatcher(app, "a").run_once()
        failed = {s.command: s for s in await app.schedules.list(states=["failed"])}
        assert failed[f"{Refuse.__module__}.Refuse"].id == refused
        assert "Refused: never" in (failed[f"{Refuse.__module__}.Refuse"].error or "")
        assert "renamed or removed" in (failed["shop.Gone\x1b[31m"].error or "")


async def test_bad_arguments_say_what_to_pass(sqlite_db: str) -> None:
    async with Application(_modules(), sqlite_db, consume=False) as app:
        await app.create_schema()
        with pytest.raises(InvalidArgument, match="exactly one of at="):
            await app.schedule(Refuse())
        with pytest.raises(InvalidArgument, match="exactly one of at="):
            await app.schedule(Refuse(), at=datetime.now(UTC), after=timedelta(0))
        with pytest.raises(InvalidArgument, match="timezone-aware"):
            await app.schedule(Refuse(), at=datetime(2030, 1, 1))
        with pytest.raises(InvalidArgument, match="0 or more"):
            await app.schedule(Refuse(), after=timedelta(seconds=-1))
        with pytest.raises(UsageError, match="No module handles Unhandled"):
            await app.schedule(Unhandled(), after=timedelta(0))
        with pytest.raises(UsageError, match="Command instance"):
            await app.schedule("Refuse", after=timedelta(0))  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="Unknown schedule state 'dead'"):
            await app.schedules.list(states=["dead"])


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["schedules", *args, "--app", "tests.ops.ops_app:make_app"])
    return result.exit_code, result.stdout, result.stderr


async def test_the_cli_lists_and_cancels_showing_stored_text_as_data(
    sqlite_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.ops import ops_app

    monkeypatch.setenv(ops_app.URL_ENV, sqlite_db)
    async with ops_app.make_app(consume=False) as app:
        await app.create_schema()
        pending = await app.schedule(ops_app.OpenTicket(title="later"), after=timedelta(hours=1))
        overdue = await app.schedule(
            ops_app.OpenTicket(title="[red]x[/red]"), at=datetime(2020, 1, 1, tzinfo=UTC)
        )
        async with app.database.connect() as conn:  # an error text with markup and escapes
            await conn.execute(
                schedules_table.update()
                .where(schedules_table.c.id == str(overdue))
                .values(error="[bold red]boom[/]\x1b[2J\x07")
            )
            await conn.commit()
    code, out, _ = await asyncio.to_thread(_cli, "list")
    assert code == 0
    assert "2 scheduled command(s)" in out and "2020-01-01 00:00:00" in out
    # markup shown as text (the cells fold at 80 columns), escapes and bells removed
    assert "[bold" in out and "boom" in out and "\x1b" not in out and "\x07" not in out
    code, out, _ = await asyncio.to_thread(_cli, "list", "--json")
    data = json.loads(out)
    assert code == 0 and [s["id"] for s in data["schedules"]] == [str(overdue), str(pending)]
    assert data["oldest_overdue"].startswith("2020-01-01")
    status = await asyncio.to_thread(
        CliRunner().invoke, cli, ["status", "--app", "tests.ops.ops_app:make_app", "--json"]
    )
    assert json.loads(status.stdout)["oldest_overdue_schedule"].startswith("2020-01-01")
    status = await asyncio.to_thread(
        CliRunner().invoke, cli, ["status", "--app", "tests.ops.ops_app:make_app"]
    )
    assert "the oldest pending one was due 2020-01-01 00:00:00 UTC" in status.stdout
    code, out, _ = await asyncio.to_thread(_cli, "cancel", str(pending))
    assert code == 0 and f"cancelled schedule {pending}" in out
    code, _, err = await asyncio.to_thread(_cli, "cancel", str(pending))
    assert code == 5 and "nothing to cancel" in err
    code, _, err = await asyncio.to_thread(_cli, "cancel", str(uuid.uuid4()))
    assert code == 5 and "No scheduled command" in err
    code, _, err = await asyncio.to_thread(_cli, "cancel", "not-an-id\x1b[31m")
    assert code == 2 and "\x1b" not in err
    code, _, _ = await asyncio.to_thread(_cli, "list", "--state", "dead")
    assert code == 2


async def test_the_cli_retries_a_failed_schedule_once_its_cause_is_fixed(
    sqlite_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.ops import ops_app

    monkeypatch.setenv(ops_app.URL_ENV, sqlite_db)
    async with ops_app.make_app(consume=False) as app:
        await app.create_schema()
        failed = await app.schedule(ops_app.OpenTicket(title="t"), after=timedelta(hours=1))
        pending = await app.schedule(ops_app.OpenTicket(title="p"), after=timedelta(hours=1))
        async with app.database.connect() as conn:
            await conn.execute(
                schedules_table.update()
                .where(schedules_table.c.id == str(failed))
                .values(state="failed", attempts=10, error="boom")
            )
            await conn.commit()
    code, out, _ = await asyncio.to_thread(_cli, "retry", str(failed))
    assert code == 0 and f"schedule {failed} is due again" in out
    async with ops_app.make_app(consume=False) as app:
        again = await app.schedules.get(failed)
        assert (again.state, again.attempts) == ("pending", 0)
        assert again.due_at <= datetime.now(UTC)
    code, _, err = await asyncio.to_thread(_cli, "retry", str(pending))
    assert code == 5 and "nothing to retry" in err
    code, out, _ = await asyncio.to_thread(_cli, "retry", str(pending), "--json")
    assert code == 0 and json.loads(out) == {"retried": False, "found": True}
    code, _, err = await asyncio.to_thread(_cli, "retry", str(uuid.uuid4()))
    assert code == 5 and "No scheduled command" in err
