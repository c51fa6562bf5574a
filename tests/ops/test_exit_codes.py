"""One exit-code convention for every command, and user mistakes as one line (issue 12): driven
as a script drives the CLI, through the real command line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dddframe.cli import app as cli
from dddframe.cli.exits import (
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_NOTHING_DONE,
    EXIT_OK,
    EXIT_SCHEMA,
    EXIT_USAGE,
)
from tests.ops import ops_app

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.ops.ops_app:make_app"
runner = CliRunner()

# Every command that takes --app, with what else it needs.
COMMANDS = [
    ["status"],
    ["worker"],
    ["relay"],
    ["dead-letters", "list"],
    ["dead-letters", "show", "1"],
    ["dead-letters", "replay", "--all"],
    ["dead-letters", "purge", "--all", "--yes"],
    ["events", "tail"],
    ["schema", "--check"],
]


def dddframe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dddframe.cli", *args],
        cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_help_lists_the_exit_codes() -> None:
    done = dddframe("--help")
    flat = " ".join(done.stdout.split())
    assert done.returncode == EXIT_OK
    for code, meaning in EXIT_CODES.items():
        assert f"{code}: {meaning}" in flat, (code, meaning)
    status_help = " ".join(dddframe("status", "--help").stdout.split())
    assert "Exit codes:" in status_help and f"3: {EXIT_CODES[3]}" in status_help


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_an_app_that_does_not_load_is_one_line_and_exit_2(command: list[str]) -> None:
    result = runner.invoke(cli, [*command, "--app", "tests.ops.no_such_module:app"])
    assert result.exit_code == EXIT_USAGE, result.output
    assert result.stderr.splitlines() == [
        "dddframe: Cannot import 'tests.ops.no_such_module' from --app "
        "'tests.ops.no_such_module:app': No module named 'tests.ops.no_such_module'"
    ]
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback_too() -> None:
    plain = dddframe("status", "--app", "tests.ops.ops_app:no_such_attribute")
    assert plain.returncode == EXIT_USAGE and "Traceback" not in plain.stderr
    assert plain.stderr == "dddframe: 'tests.ops.ops_app' has no attribute 'no_such_attribute'\n"
    debug = dddframe("--debug", "status", "--app", "tests.ops.ops_app:no_such_attribute")
    assert debug.returncode == EXIT_USAGE
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.endswith(plain.stderr)


def test_an_unreachable_database_is_one_line_and_exit_1() -> None:
    env = {ops_app.URL_ENV: "postgresql+asyncpg://postgres@127.0.0.1:1/nothing"}
    done = dddframe("status", "--app", APP, env=env)
    assert done.returncode == EXIT_FAILED, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("dddframe: ") and "--debug" in line


async def test_a_missing_schema_is_exit_6_for_every_reading_command(
    sqlite_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ops_app.URL_ENV, sqlite_db)
    for command in (["status"], ["dead-letters", "list"], ["schema", "--check"]):
        result = await asyncio.to_thread(runner.invoke, cli, [*command, "--app", APP])
        assert result.exit_code == EXIT_SCHEMA, (command, result.output)
        assert "dddframe migrations" in result.stderr and len(result.stderr.splitlines()) == 1


async def test_nothing_found_is_an_answer_in_json_and_exit_5_in_text(ops_url: str) -> None:
    app = ops_app.make_app()
    async with app:
        await app.create_schema()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli, [*args, "--app", APP])
        return result.exit_code, result.stdout

    assert await asyncio.to_thread(run, "dead-letters", "list", "--json") == (EXIT_OK, "[]\n")
    code, out = await asyncio.to_thread(run, "dead-letters", "list")
    assert code == EXIT_OK and "0 parked event(s)" in out
    assert await asyncio.to_thread(run, "dead-letters", "show", "42", "--json") == (
        EXIT_OK,
        "null\n",
    )
    code, _ = await asyncio.to_thread(run, "dead-letters", "show", "42")
    assert code == EXIT_NOTHING_DONE
    code, out = await asyncio.to_thread(run, "dead-letters", "replay", "--all", "--json")
    assert (code, json.loads(out)) == (EXIT_OK, {"replayed": 0})
    code, out = await asyncio.to_thread(run, "dead-letters", "purge", "--all", "--yes")
    assert code == EXIT_NOTHING_DONE and "0 dead letter(s) purged" in out


def test_bad_option_values_are_usage_errors() -> None:
    result = runner.invoke(cli, ["status", "--app", APP, "--max-lag", "-1"])
    assert result.exit_code == EXIT_USAGE and "--max-lag" in result.stderr
    result = runner.invoke(cli, ["dead-letters", "list", "--app", APP, "--state", "gone"])
    assert result.exit_code == EXIT_USAGE
    result = runner.invoke(cli, ["status"])  # --app missing: click's own usage error
    assert result.exit_code == EXIT_USAGE
