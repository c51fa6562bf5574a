"""``dddframe dead-letters list|show|replay|purge`` against a real database."""

from __future__ import annotations

import asyncio
import json
import os
import uuid

import pytest
from typer.testing import CliRunner

from dddframe.cli import app as cli
from dddframe.cli.exits import EXIT_NOTHING_DONE, EXIT_USAGE
from dddframe.testing import reset_database
from tests.contract.model import CreateCounter, Increment
from tests.database_bus import cli_app

SPEC = "tests.database_bus.cli_app:make_app"


def _fail_one_counter(url: str) -> uuid.UUID:
    async def main() -> uuid.UUID:
        await reset_database(url)
        async with cli_app.make_app() as app:
            await app.create_schema()
            bad: uuid.UUID = await app.engine.run(CreateCounter())
            cli_app.PROBE.always_fail.add(str(bad))
            await app.engine.run(Increment(counter_id=bad, times=2))
            await app.drain()
        return bad

    return asyncio.run(main())


def _deliver_pending() -> None:
    async def main() -> None:
        async with cli_app.make_app() as app:
            await app.drain()

    asyncio.run(main())


@pytest.fixture
def url(sqlite_db: str) -> str:
    os.environ["CLI_TEST_DB_URL"] = sqlite_db
    cli_app.PROBE.seen.clear()
    cli_app.PROBE.always_fail.clear()
    return sqlite_db


def test_list_show_replay(url: str) -> None:
    bad = _fail_one_counter(url)
    runner = CliRunner()
    listed = runner.invoke(cli, ["dead-letters", "list", "--app", SPEC, "--json"])
    assert listed.exit_code == 0, listed.output
    letters = json.loads(listed.output)
    assert [(d["aggregate_version"], d["state"]) for d in letters] == [(2, "dead")]
    assert "listener always fails" in letters[0]["error"]
    waiting = runner.invoke(cli, ["dead-letters", "list", "--app", SPEC, "--state", "waiting"])
    assert waiting.exit_code == 0 and "1 parked event(s), state=waiting" in waiting.output

    shown = runner.invoke(cli, ["dead-letters", "show", str(letters[0]["id"]), "--app", SPEC])
    assert shown.exit_code == 0
    assert "RuntimeError: listener always fails" in shown.output
    missing = runner.invoke(cli, ["dead-letters", "show", "999999", "--app", SPEC])
    assert missing.exit_code == EXIT_NOTHING_DONE
    assert "No parked event with id 999999" in missing.output
    missing_json = runner.invoke(cli, ["dead-letters", "show", "999999", "--app", SPEC, "--json"])
    assert missing_json.exit_code == 0 and json.loads(missing_json.stdout) is None

    cli_app.PROBE.always_fail.clear()
    replayed = runner.invoke(
        cli, ["dead-letters", "replay", "--app", SPEC, "--bus", "database", "--aggregate", str(bad)]
    )
    assert replayed.exit_code == 0 and "1 dead letter(s) replayed" in replayed.output
    _deliver_pending()
    assert [v for a, v, *_ in cli_app.PROBE.seen if a == str(bad)] == [2, 3]
    empty = runner.invoke(cli, ["dead-letters", "list", "--app", SPEC])
    assert empty.exit_code == 0 and "0 parked event(s)" in empty.output  # an empty list
    again = runner.invoke(cli, ["dead-letters", "replay", "--all", "--app", SPEC])
    assert again.exit_code == EXIT_NOTHING_DONE and "0 dead letter(s) replayed" in again.output
    again_json = runner.invoke(cli, ["dead-letters", "replay", "--all", "--app", SPEC, "--json"])
    assert again_json.exit_code == 0 and json.loads(again_json.stdout) == {"replayed": 0}


def test_purge_needs_a_selection_and_confirmation(url: str) -> None:
    _fail_one_counter(url)
    runner = CliRunner()
    assert runner.invoke(cli, ["dead-letters", "purge", "--app", SPEC]).exit_code == EXIT_USAGE
    declined = runner.invoke(cli, ["dead-letters", "purge", "--all", "--app", SPEC], input="n\n")
    assert declined.exit_code == EXIT_NOTHING_DONE
    purged = runner.invoke(
        cli, ["dead-letters", "purge", "--all", "--yes", "--app", SPEC, "--json"]
    )
    assert purged.exit_code == 0 and json.loads(purged.output) == {"purged": 1}
    _deliver_pending()  # the waiting event behind the purged one is released
    assert [v for _a, v, *_ in cli_app.PROBE.seen] == []  # still failing, so parked again
    letters = runner.invoke(cli, ["dead-letters", "list", "--app", SPEC, "--json"])
    assert [d["aggregate_version"] for d in json.loads(letters.output)] == [3]


def test_bus_guard_refuses_another_transport_and_touches_nothing(url: str) -> None:
    _fail_one_counter(url)
    runner = CliRunner()
    wrong = runner.invoke(cli, ["dead-letters", "replay", "--all", "--app", SPEC, "--bus", "amqp"])
    assert wrong.exit_code == EXIT_USAGE
    assert "uses the database bus" in wrong.output and "--bus database" in wrong.output
    unknown = runner.invoke(cli, ["dead-letters", "list", "--app", SPEC, "--bus", "nats"])
    assert unknown.exit_code == EXIT_USAGE and "--bus must be one of" in unknown.output
    still = runner.invoke(cli, ["dead-letters", "list", "--app", SPEC, "--bus", "database"])
    assert still.exit_code == 0 and "1 parked event(s), state=dead" in still.output
