"""``dddframe schedules list|cancel|retry``: the scheduled commands of an application.

Stored texts (command names, errors) are shown as data: markup escaped, control characters
removed. Exit codes (:mod:`dddframe.cli.exits`): 0 done (an empty list too), 1 cannot read,
2 bad usage, 5 nothing to do (unknown id; for cancel: it ran, failed or was cancelled already;
for retry: it has not failed); with ``--json`` "nothing to do" is an answer
(``{"cancelled": false}``, ``{"retried": false}``) and exits 0.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer
from rich.table import Table

from dddframe.app.application import Application
from dddframe.cli.exits import EXIT_NOTHING_DONE
from dddframe.cli.loading import load_app, prepare_schema
from dddframe.cli.output import console, safe
from dddframe.engine.schedules import SCHEDULE_STATES, Schedule
from dddframe.errors import ScheduleNotFound

app = typer.Typer(help="List, cancel and retry scheduled commands.", no_args_is_help=True)
T = TypeVar("T")

APP_OPTION = typer.Option(..., "--app", help="package.module:app or a factory")
JSON = typer.Option(False, "--json", help="Machine-readable output")


def run_on_app(app_spec: str, action: Callable[[Application], Awaitable[T]]) -> T:
    """Load the application (not consuming), check its schema, run ``action`` on it."""

    async def main() -> T:
        application = load_app(app_spec, consume=False)
        await prepare_schema(application, create=False)
        async with application:
            return await action(application)

    return asyncio.run(main())


def _as_dict(s: Schedule) -> dict[str, Any]:
    return {
        "id": str(s.id),
        "command": s.command,
        "due_at": s.due_at.isoformat(),
        "state": s.state,
        "attempts": s.attempts,
        "error": s.error,
        "created_at": s.created_at.isoformat(),
        "payload": s.payload,
    }


@app.command("list")
def list_(
    app_spec: str = APP_OPTION,
    state: str = typer.Option(
        "pending", "--state", help=f"{', '.join(SCHEDULE_STATES)} or all (default: pending)"
    ),
    limit: int = typer.Option(100, "--limit", min=1),
    as_json: bool = JSON,
) -> None:
    """List scheduled commands, soonest due first; the title says how overdue the oldest is."""
    if state not in (*SCHEDULE_STATES, "all"):
        raise typer.BadParameter(f"--state must be {', '.join(SCHEDULE_STATES)} or all")
    states = SCHEDULE_STATES if state == "all" else (state,)

    async def read(a: Application) -> tuple[list[Schedule], Any]:
        return await a.schedules.list(
            states=states, limit=limit
        ), await a.schedules.oldest_overdue()

    found, overdue = run_on_app(app_spec, read)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "schedules": [_as_dict(s) for s in found],
                    "oldest_overdue": overdue.isoformat() if overdue else None,
                },
                indent=2,
            )
        )
        return
    title = f"{len(found)} scheduled command(s), state={state}"
    if overdue is not None:
        title += f"; the oldest pending one was due at {overdue:%Y-%m-%d %H:%M:%S} UTC"
    table = Table(title=title)
    for column in ("id", "command", "due", "state", "attempts", "error"):
        table.add_column(column, overflow="fold")
    for s in found:
        table.add_row(
            str(s.id),
            safe(s.command),
            s.due_at.strftime("%Y-%m-%d %H:%M:%S"),
            s.state,
            str(s.attempts),
            safe((s.error or "")[:120]),
        )
    console().print(table)


@app.command()
def cancel(
    schedule_id: str = typer.Argument(..., help="The id shown by `list`"),
    app_spec: str = APP_OPTION,
    as_json: bool = JSON,
) -> None:
    """Cancel a scheduled command that has not run yet."""
    _act(
        app_spec,
        lambda a: a.cancel_schedule(schedule_id),
        as_json,
        answer="cancelled",
        refused=f"schedule {schedule_id} ran, failed or was cancelled already; nothing to cancel.",
        done=f"cancelled schedule {schedule_id}",
    )


@app.command()
def retry(
    schedule_id: str = typer.Argument(..., help="The id shown by `list --state failed`"),
    app_spec: str = APP_OPTION,
    as_json: bool = JSON,
) -> None:
    """Run a failed scheduled command (or process timer) again, due now."""
    _act(
        app_spec,
        lambda a: a.retry_schedule(schedule_id),
        as_json,
        answer="retried",
        refused=(
            f"schedule {schedule_id} has not failed (it is pending, ran or was cancelled); "
            "nothing to retry."
        ),
        done=f"schedule {schedule_id} is due again",
    )


def _act(
    app_spec: str,
    action: Callable[[Application], Awaitable[bool]],
    as_json: bool,
    *,
    answer: str,
    refused: str,
    done: str,
) -> None:
    """Run a change of one schedule and say what came of it: ``done``, or ``refused`` and exit
    5 when there was nothing to do (an unknown id too); with ``--json`` ``{answer: ..., "found":
    ...}`` and exit 0."""
    try:
        changed = run_on_app(app_spec, action)
    except ScheduleNotFound as exc:
        if as_json:
            typer.echo(json.dumps({answer: False, "found": False}))
            return
        typer.echo(f"dddframe: {safe(exc, markup=False)}", err=True)
        raise typer.Exit(EXIT_NOTHING_DONE) from exc
    if as_json:
        typer.echo(json.dumps({answer: changed, "found": True}))
        return
    if not changed:
        typer.echo(f"dddframe: {refused}", err=True)
        raise typer.Exit(EXIT_NOTHING_DONE)
    typer.echo(done)
