"""Driving ``dddframe dead-letters`` from async tests, as an operator's script would."""

from __future__ import annotations

import asyncio

from typer.testing import CliRunner

from dddframe.cli import app as cli


async def dead_letters(spec: str, bus: str, *args: str) -> tuple[int, str]:
    """``dddframe dead-letters <args> --app <spec> --bus <bus>``: (exit code, stdout).

    Runs in a thread: the CLI starts its own event loop, which cannot nest in the test's.
    """

    def invoke() -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["dead-letters", *args, "--app", spec, "--bus", bus])
        return result.exit_code, result.stdout

    return await asyncio.to_thread(invoke)
