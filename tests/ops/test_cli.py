"""The operator CLI against a real SQLite application (and PostgreSQL/MariaDB for status)."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from dddframe import Application
from dddframe.cli import app as cli
from dddframe.cli.events import tail_events
from dddframe.cli.exits import EXIT_DEAD_LETTERS, EXIT_LAGGING, EXIT_OK, EXIT_USAGE
from dddframe.domain.envelope import Envelope
from dddframe.outbox.reader import PositionStore
from dddframe.outbox.tables import positions_table
from dddframe.testing import reset_database
from tests.ops import ops_app
from tests.ops.conftest import filled

APP = "tests.ops.ops_app:make_app"
SUB = "ops.Notifier.on_opened"
runner = CliRunner()


def status_json(*extra: str) -> tuple[int, dict[str, object]]:
    result = runner.invoke(cli, ["status", "--app", APP, "--json", *extra])
    return result.exit_code, json.loads(result.stdout)


async def test_status_healthy_then_dead_letter(
    ops_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await filled(ops_url, ["a", "b"], monkeypatch)
    code, data = await asyncio.to_thread(status_json)
    assert code == EXIT_OK
    (sub,) = data["subscriptions"]  # type: ignore[misc]
    assert sub["name"] == SUB and sub["position"] == 2 and sub["lag_events"] == 0
    assert sub["dead_letters"] == 0 and data["head"] == 2

    await filled(ops_url, ["boom-1"], monkeypatch)
    code, data = await asyncio.to_thread(status_json)
    assert code == EXIT_DEAD_LETTERS
    (sub,) = data["subscriptions"]  # type: ignore[misc]
    assert sub["dead_letters"] == 1 and sub["position"] == 3 and data["dead_letters"] == 1

    table = await asyncio.to_thread(runner.invoke, cli, ["status", "--app", APP])
    assert table.exit_code == EXIT_DEAD_LETTERS
    assert SUB in table.stdout and "dead letters" in table.stdout


async def test_status_lag_and_relays(running_app: Application) -> None:
    for title in ("a", "b", "c"):
        await running_app.engine.run(ops_app.OpenTicket(title=title))
    await running_app.drain()
    async with running_app.database.connect() as conn:
        # Rewind the subscription and add a relay, as a lagging worker and relay leave them.
        await PositionStore().save(conn, SUB, 1)
        await PositionStore().load(conn, "relay.kafka", start=2)
        await conn.commit()
    code, data = await asyncio.to_thread(status_json, "--max-lag", "1")
    assert code == EXIT_LAGGING
    (sub,) = data["subscriptions"]  # type: ignore[misc]
    assert sub["lag_events"] == 2 and sub["lag_seconds"] > 0
    assert data["relays"] == [
        {
            "name": "relay.kafka",
            "last_sent": 2,
            "lag_events": 1,
            "updated_at": data["relays"][0]["updated_at"],  # type: ignore[index]
        }
    ]
    code, _ = await asyncio.to_thread(status_json, "--max-lag", "5")
    assert code == EXIT_OK
    table = await asyncio.to_thread(runner.invoke, cli, ["status", "--app", APP])
    assert "relay.kafka" in table.stdout


async def test_status_before_first_delivery_lists_subscription(
    ops_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = ops_app.make_app(consume=False)
    async with app:
        await app.create_schema()
        await app.engine.run(ops_app.OpenTicket(title="x"))
    code, data = await asyncio.to_thread(status_json)
    (sub,) = data["subscriptions"]  # type: ignore[misc]
    assert code == EXIT_OK and sub["position"] is None
    # the committed event counts once the sequencer numbered it (any process may)
    assert sub["lag_events"] + data["unsequenced"] == 1  # type: ignore[operator]


def test_status_bad_app_is_a_usage_error_in_one_line() -> None:
    result = runner.invoke(cli, ["status", "--app", "tests.ops.nothing_here:app"])
    assert result.exit_code == EXIT_USAGE
    assert "dddframe: Cannot import" in result.stderr and len(result.stderr.splitlines()) == 1


async def test_events_tail_prints_in_order_with_names_and_json(
    ops_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await filled(ops_url, ["first", "second", "third"], monkeypatch)
    result = await asyncio.to_thread(
        runner.invoke, cli, ["events", "tail", "--app", APP, "--json", "--last", "2"]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(x["position"], x["payload"]["title"]) for x in lines] == [
        (2, "second"),
        (3, "third"),
    ]
    assert all(x["headers"]["correlation_id"] for x in lines)
    plain = await asyncio.to_thread(
        runner.invoke, cli, ["events", "tail", "--app", APP, "--after", "0", "--name", "Nope"]
    )
    assert plain.exit_code == 0 and plain.stdout == ""
    plain = await asyncio.to_thread(
        runner.invoke, cli, ["events", "tail", "--app", APP, "--name", "Ops:TicketOpened"]
    )
    assert plain.stdout.count("Ops:TicketOpened") == 3


async def test_events_tail_follow_flag_exits_after_count(
    ops_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await filled(ops_url, ["x", "y"], monkeypatch)
    args = ["events", "tail", "--app", APP, "--follow", "--after", "1", "--count", "1"]
    result = await asyncio.to_thread(runner.invoke, cli, [*args, "--poll-interval", "0.01"])
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    assert line.split()[0] == "2" and '"title":"y"' in line


async def test_events_tail_follows_new_commits(running_app: Application) -> None:
    seen: list[Envelope] = []
    stop = asyncio.Event()

    def emit(env: Envelope) -> None:
        seen.append(env)
        if len(seen) == 3:
            stop.set()

    await running_app.engine.run(ops_app.OpenTicket(title="before"))
    follower = asyncio.create_task(
        tail_events(running_app.database, emit, follow=True, poll_interval=0.02, stop=stop)
    )
    await asyncio.sleep(0.05)
    await running_app.engine.run(ops_app.OpenTicket(title="during-1"))
    await running_app.engine.run(ops_app.OpenTicket(title="during-2"))
    assert await asyncio.wait_for(follower, 10) == 3
    assert [e.payload()["title"] for e in seen] == ["before", "during-1", "during-2"]
    assert [e.position for e in seen] == [1, 2, 3]


async def test_status_on_server_database(server_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    await reset_database(server_db)
    ops_app.Notifier.broken = True
    await filled(server_db, ["ok", "boom"], monkeypatch)
    code, data = await asyncio.to_thread(status_json)
    (sub,) = data["subscriptions"]  # type: ignore[misc]
    assert code == EXIT_DEAD_LETTERS and sub["position"] == 2 and sub["dead_letters"] == 1
    app = ops_app.make_app(consume=False)
    async with app, app.database.connect() as conn:
        assert (
            await conn.scalar(
                positions_table.select().with_only_columns(positions_table.c.position)
            )
            == 2
        )
