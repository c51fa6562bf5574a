"""``dddframe status``: per subscription position, lag, retries and dead letters; per relay the
last position sent. A rich table for people, ``--json`` for scripts.

Everything comes from ``await app.bus.status()``, the transport's own view (outbox positions on
the in-process and database buses, committed offsets on Kafka, queue depths on RabbitMQ), read
by a process that does not consume.

Exit codes (:mod:`dddframe.cli.exits`): 0 healthy, 1 the application or database could not be
read, 2 a usage or configuration error, 3 dead letters exist, 4 a subscription lags more than
``--max-lag`` events or ``--max-lag-seconds``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import typer
from rich.console import Console
from rich.table import Table

from dddframe.app.application import Application
from dddframe.cli.exits import EXIT_DEAD_LETTERS, EXIT_LAGGING, EXIT_USAGE
from dddframe.cli.loading import load_app, prepare_schema
from dddframe.cli.output import console, safe
from dddframe.outbox.status import SystemStatus

__all__ = ["application_status", "status"]


async def application_status(app: Application) -> SystemStatus:
    """The :class:`~dddframe.outbox.status.SystemStatus` of a started application, as its
    transport reports it (``await app.bus.status()``), with the oldest overdue scheduled
    command and the count of held process instances (from the database, whatever the
    transport)."""
    found = await app.bus.status()
    overdue = await app.schedules.oldest_overdue()
    held = len(await app.held_processes(limit=1000))
    return dataclasses.replace(found, oldest_overdue_schedule=overdue, held_instances=held)


async def _read(app_spec: str) -> SystemStatus:
    application = load_app(app_spec, consume=False)
    await prepare_schema(application, create=False)  # missing or behind: one line, exit 6
    async with application:
        return await application_status(application)


def _render(result: SystemStatus, console: Console) -> None:
    table = Table(title=f"subscriptions (outbox head {result.head})")
    for col in ("subscription", "position", "lag", "lag (s)", "retries", "dead letters"):
        table.add_column(col, justify="left" if col == "subscription" else "right", overflow="fold")
    for s in result.subscriptions:
        table.add_row(
            safe(s.name),
            "-" if s.position is None else str(s.position),
            str(s.lag_events),
            f"{s.lag_seconds:.1f}",
            str(s.retries_pending),
            f"[red]{s.dead_letters}[/red]" if s.dead_letters else "0",
        )
    console.print(table)
    if result.relays:
        relays = Table(title="relays")
        for col in ("relay", "last sent", "lag", "updated"):
            relays.add_column(col, justify="left" if col == "relay" else "right", overflow="fold")
        for r in result.relays:
            updated = r.updated_at.isoformat(timespec="seconds") if r.updated_at else "-"
            relays.add_row(safe(r.name), str(r.last_sent), str(r.lag_events), updated)
        console.print(relays)
    if result.unsequenced:
        console.print(f"{result.unsequenced} committed event(s) not sequenced yet")
    if result.oldest_overdue_schedule is not None:
        late = (result.at - result.oldest_overdue_schedule).total_seconds()
        console.print(
            f"scheduled commands: the oldest pending one was due "
            f"{result.oldest_overdue_schedule:%Y-%m-%d %H:%M:%S} UTC ({max(late, 0):.0f} s ago)"
        )
    if result.held_instances:
        console.print(
            f"[red]{result.held_instances}[/red] process instance(s) held by a failed step "
            "(`dddframe processes held`)"
        )


def status(
    app_spec: str = typer.Option(..., "--app", help="package.module:app or a factory"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table"),
    max_lag: int | None = typer.Option(
        None, "--max-lag", help="Exit 4 when a subscription lags more events than this"
    ),
    max_lag_seconds: float | None = typer.Option(
        None, "--max-lag-seconds", help="Exit 4 when the oldest pending event is older"
    ),
) -> None:
    """Show every subscription's position and lag, retries and dead letters, and relays.

    Exit code 0 healthy, 1 cannot read, 2 usage error, 3 dead letters exist, 4 lag above
    --max-lag(-seconds).
    """
    if (max_lag is not None and max_lag < 0) or (
        max_lag_seconds is not None and max_lag_seconds < 0
    ):
        typer.echo("dddframe: --max-lag and --max-lag-seconds must be >= 0", err=True)
        raise typer.Exit(EXIT_USAGE)
    result = asyncio.run(_read(app_spec))
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _render(result, console())
    lagging = any(
        (max_lag is not None and s.lag_events > max_lag)
        or (max_lag_seconds is not None and s.lag_seconds > max_lag_seconds)
        for s in result.subscriptions
    )
    if result.dead_letters:
        raise typer.Exit(EXIT_DEAD_LETTERS)
    if lagging:
        raise typer.Exit(EXIT_LAGGING)
