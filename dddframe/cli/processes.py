"""``dddframe processes held|release``: process-manager instances a failed step holds.

A step that keeps failing holds its instance: its later events and timers wait behind it until
the failed event is delivered (replay its dead letter) or an operator gives up on it
(``release``, for a dead letter that was purged). Stored texts are shown as data: markup
escaped, control characters removed. Exit codes (:mod:`dddframe.cli.exits`): 0 done (an empty
list too), 1 cannot read, 2 bad usage, 5 nothing to do (the instance is not held; an unknown
process name too); with ``--json`` "nothing to do" is an answer (``{"released": null}``) and
exits 0.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from dddframe.cli.exits import EXIT_NOTHING_DONE
from dddframe.cli.output import console, safe
from dddframe.cli.schedules import APP_OPTION, JSON, run_on_app
from dddframe.errors import NotFound
from dddframe.processes.holds import HeldInstance

app = typer.Typer(
    help="List held process-manager instances and release them.", no_args_is_help=True
)


def _as_dict(h: HeldInstance) -> dict[str, Any]:
    return {
        "process": h.process,
        "key": h.key,
        "held_by": h.held_by,
        "waiting": h.waiting,
        "since": h.since.isoformat() if h.since else None,
    }


@app.command()
def held(
    app_spec: str = APP_OPTION,
    process: str | None = typer.Option(None, "--process", help="Only this process manager"),
    limit: int = typer.Option(100, "--limit", min=1),
    as_json: bool = JSON,
) -> None:
    """List held instances, longest waiting first: what holds each, how much waits behind."""
    found = run_on_app(app_spec, lambda a: a.held_processes(process, limit=limit))
    if as_json:
        typer.echo(json.dumps({"held": [_as_dict(h) for h in found]}, indent=2))
        return
    table = Table(title=f"{len(found)} held process instance(s)")
    for column in ("process", "key", "held by", "waiting", "since"):
        table.add_column(column, overflow="fold")
    for h in found:
        table.add_row(
            safe(h.process),
            safe(h.key),
            safe(h.held_by),
            str(h.waiting),
            h.since.strftime("%Y-%m-%d %H:%M:%S") if h.since else "",
        )
    console().print(table)


@app.command()
def release(
    process: str = typer.Argument(..., help="The process manager's name (its class name)"),
    key: str = typer.Argument(..., help="The instance's correlation key"),
    app_spec: str = APP_OPTION,
    as_json: bool = JSON,
) -> None:
    """Give up on what holds an instance and run what waits behind it, in order."""
    try:
        skipped = run_on_app(app_spec, lambda a: a.release_process(process, key))
    except NotFound as exc:
        if as_json:
            typer.echo(json.dumps({"released": None, "found": False}))
            return
        typer.echo(f"dddframe: {safe(exc, markup=False)}", err=True)
        raise typer.Exit(EXIT_NOTHING_DONE) from exc
    if as_json:
        typer.echo(json.dumps({"released": skipped, "found": True}))
        return
    if skipped is None:
        typer.echo(
            f"dddframe: {safe(process)} {safe(key)!r} is not held; nothing to release.", err=True
        )
        raise typer.Exit(EXIT_NOTHING_DONE)
    typer.echo(f"released {safe(process)} {safe(key)!r}: skipped {safe(skipped)}")
