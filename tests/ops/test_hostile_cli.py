"""Stored data shown by the CLI is data, never markup or terminal control (issue 12): dead
letters whose error texts and tracebacks hold Rich markup and ESC/OSC sequences, on the database
bus, through the real CLI."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from dddframe.cli import app as cli
from dddframe.cli.exits import EXIT_DEAD_LETTERS
from tests.ops import database_app, ops_app

APP = "tests.ops.database_app:make_app"
runner = CliRunner()
# A closing tag with nothing open (MarkupError), hidden red-on-red text, a hyperlink, an OSC
# title change, a BEL, a screen clear and a carriage return that overwrites the line.
HOSTILE = (
    "boom [/] [red on red]hidden[/] [link=http://evil.example]click[/link] "
    "\x1b]0;pwned\x07 \x1b[2J\rOVERWRITTEN \u202eevil"
)
CONTROL = ("\x1b", "\x07", "\r", "\u202e")


@pytest.fixture
async def hostile(ops_url: str) -> int:
    """One dead letter whose error (and traceback) carry HOSTILE; its id."""
    app = database_app.make_app()
    async with app:
        await app.create_schema()
        await app.engine.run(ops_app.OpenTicket(title=HOSTILE))
        await app.drain()
        (dead,) = await app.dead_letters.list()
    assert HOSTILE in (dead.error or "") and HOSTILE in (dead.traceback or "")
    return dead.id


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(cli, list(args))
    return result.exit_code, result.stdout


async def test_list_shows_hostile_error_as_text(hostile: int) -> None:
    code, out = await asyncio.to_thread(invoke, "dead-letters", "list", "--app", APP)
    # It used to crash with a Rich MarkupError: exit 1, which the command means as "nothing".
    assert code == 0, out
    flat = " ".join(out.split())
    assert "[red on red]" in flat or "[red on" in flat
    assert not any(c in out for c in CONTROL)


async def test_show_renders_no_markup_and_no_control_bytes(hostile: int) -> None:
    code, out = await asyncio.to_thread(invoke, "dead-letters", "show", str(hostile), "--app", APP)
    assert code == 0, out
    # the markup is printed literally (error, payload, traceback), never applied
    flat = " ".join(out.split())
    assert flat.count("[red on red]hidden[/]") == 3
    assert flat.count("[link=http://evil.example]click[/link]") == 3
    assert not any(c in out for c in CONTROL)
    code, out = await asyncio.to_thread(
        invoke, "dead-letters", "show", str(hostile), "--app", APP, "--json"
    )
    assert code == 0 and HOSTILE in json.loads(out)["error"]  # JSON keeps the data exactly


async def test_events_tail_and_status_strip_control_bytes(hostile: int) -> None:
    code, out = await asyncio.to_thread(invoke, "events", "tail", "--app", APP)
    assert code == 0 and "[red on red]hidden[/]" in out
    assert not any(c in out for c in CONTROL)
    code, out = await asyncio.to_thread(invoke, "status", "--app", APP)
    assert code == EXIT_DEAD_LETTERS and not any(c in out for c in CONTROL)


async def test_tables_fit_80_columns_and_fold_long_texts(hostile: int) -> None:
    """Off a terminal (a pipe, a script, ``COLUMNS=80``) every line fits 80 columns; a long
    hostile error folds onto more lines, its start still shown."""

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli, [*args, "--app", APP], env={"COLUMNS": "80"})
        return result.exit_code, result.stdout

    for command in (("dead-letters", "list"), ("status",), ("dead-letters", "show", str(hostile))):
        code, out = await asyncio.to_thread(run, *command)
        assert code in (0, EXIT_DEAD_LETTERS), out
        widest = max(len(line) for line in out.splitlines())
        assert widest <= 80, (command, widest, out)
    code, out = await asyncio.to_thread(run, "dead-letters", "list")
    column = [line.split("│")[2].strip() for line in out.splitlines() if line.count("│") > 2]
    assert "".join(column) == "ops.Notifier.on_opened"  # folded, not cut
