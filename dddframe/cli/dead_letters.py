"""``dddframe dead-letters list|show|replay|purge``: operate on dead letters.

Works on ``app.dead_letters``, the transport's :class:`~dddframe.bus.protocol.DeadLetters`
(database rows, Kafka dead-letter topics, AMQP dead-letter queues), so every transport is
operated the same way. Stored texts (errors, tracebacks, payloads) are shown as data: markup
escaped, control characters removed (:func:`dddframe.cli.output.safe`). Exit codes
(:mod:`dddframe.cli.exits`): 0 done (an empty list too), 1 cannot read, 2 bad usage, 5 no dead
letter matched or the confirmation was declined; with ``--json`` "nothing matched" is an
answer (``null``, ``{"replayed": 0}``) and exits 0.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer
from rich.table import Table

from dddframe.app.application import Application
from dddframe.bus import TRANSPORTS
from dddframe.bus.dead_letters import DeadLetter
from dddframe.cli.exits import EXIT_NOTHING_DONE, EXIT_USAGE
from dddframe.cli.loading import load_app, prepare_schema
from dddframe.cli.output import console, safe
from dddframe.domain.envelope import Envelope
from dddframe.errors import DeadLetterNotFound, PoisonEvent

app = typer.Typer(help="List, show, replay and purge dead letters.", no_args_is_help=True)
T = TypeVar("T")

APP_OPTION = typer.Option(..., "--app", help="package.module:app or a factory")
SUBSCRIPTION = typer.Option(None, "--subscription", "-s", help="Only this subscription")
AGGREGATE = typer.Option(None, "--aggregate", "-a", help="Only this aggregate id")
JSON = typer.Option(False, "--json", help="Machine-readable output")
BUS = typer.Option(
    None,
    "--bus",
    help="The transport the app must use (inprocess, database, kafka, amqp); a guard for scripts",
)


def _run(app_spec: str, bus: str | None, action: Callable[[Application], Awaitable[T]]) -> T:
    if bus is not None and bus not in TRANSPORTS:
        raise typer.BadParameter(f"--bus must be one of {', '.join(TRANSPORTS)}, not {bus!r}")

    async def main() -> T:
        application = load_app(app_spec, consume=False)
        if bus is not None and application.bus.name != bus:
            # Operating another transport's dead letters than the one asked for would list
            # nothing, or replay into the wrong system: refuse before starting anything.
            typer.echo(
                f"--bus {bus}: the app {app_spec} uses the {application.bus.name} bus. "
                f"Pass --bus {application.bus.name} or the app that uses the {bus} bus.",
                err=True,
            )
            raise typer.Exit(EXIT_USAGE)
        await prepare_schema(application, create=False)  # missing or behind: one line, exit 6
        async with application:
            return await action(application)

    return asyncio.run(main())


def _version(d: DeadLetter) -> object:
    """The aggregate version of a dead letter, "?" when its stored envelope is unreadable."""
    try:
        return d.envelope.aggregate_version
    except PoisonEvent:
        return "?"


def _as_dict(d: DeadLetter, *, full: bool = False) -> dict[str, Any]:
    try:
        env: Envelope | None = d.envelope
    except PoisonEvent:  # a stored envelope that no longer decodes is shown, not a crash
        env = None
    out: dict[str, Any] = {
        "id": d.id,
        "subscription": d.subscription,
        "state": d.state,
        "event_id": d.event_id,
        "name": d.name,
        "aggregate": d.ordering_key,
        "aggregate_version": env.aggregate_version if env is not None else None,
        "attempts": d.attempts,
        "error": d.error,
        "created_at": d.created_at.isoformat(),
        "updated_at": d.updated_at.isoformat(),
    }
    if full:
        out["traceback"] = d.traceback
        out["headers"] = env.headers if env is not None else None
        out["payload"] = env.payload_json if env is not None else d.envelope_text
    return out


@app.command("list")
def list_(
    app_spec: str = APP_OPTION,
    subscription: str | None = SUBSCRIPTION,
    aggregate: str | None = AGGREGATE,
    state: str = typer.Option("dead", "--state", help="dead, retry, waiting or all"),
    limit: int = typer.Option(100, "--limit", min=1),
    as_json: bool = JSON,
    bus: str | None = BUS,
) -> None:
    """List dead letters (or other parked events with --state), oldest first."""
    if state not in ("dead", "retry", "waiting", "all"):
        raise typer.BadParameter("--state must be dead, retry, waiting or all")
    letters = _run(
        app_spec,
        bus,
        lambda a: a.dead_letters.list(
            subscription=subscription,
            aggregate_id=aggregate,
            state=None if state == "all" else state,
            limit=limit,
        ),
    )
    if as_json:
        typer.echo(json.dumps([_as_dict(d) for d in letters], indent=2))
    else:
        table = Table(title=f"{len(letters)} parked event(s), state={state}")
        for column in ("id", "subscription", "event", "aggregate", "attempts", "error", "since"):
            table.add_column(column, overflow="fold")
        for d in letters:
            table.add_row(
                str(d.id),
                safe(d.subscription),
                safe(d.name),
                safe(f"{d.ordering_key} v{_version(d)}"),
                str(d.attempts),
                safe((d.error or "")[:120]),
                d.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            )
        console().print(table)


@app.command()
def show(
    dead_letter_id: int = typer.Argument(..., help="The id shown by `list`"),
    app_spec: str = APP_OPTION,
    as_json: bool = JSON,
    bus: str | None = BUS,
) -> None:
    """Show one dead letter with its payload, headers and traceback."""
    try:
        d = _run(app_spec, bus, lambda a: a.dead_letters.get(dead_letter_id))
    except DeadLetterNotFound as exc:
        if as_json:
            typer.echo("null")
            return
        typer.echo(f"dddframe: {safe(exc, markup=False)}", err=True)
        raise typer.Exit(EXIT_NOTHING_DONE) from exc
    data = _as_dict(d, full=True)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    out = console()
    for key, value in data.items():
        if key != "traceback":
            out.print(f"[bold]{key}[/]: {safe(value)}")
    out.print("[bold]traceback[/]:")
    out.print(safe(d.traceback or "(none)"))


def _selection(
    ids: list[int], subscription: str | None, aggregate: str | None, everything: bool
) -> dict[str, Any]:
    if not ids and subscription is None and aggregate is None and not everything:
        raise typer.BadParameter("name ids, --subscription, --aggregate, or --all")
    return {
        "ids": ids or None,
        "subscription": subscription,
        "aggregate_id": aggregate,
        "everything": everything,
    }


@app.command()
def replay(
    ids: list[int] = typer.Argument(None, help="Dead letter ids"),
    app_spec: str = APP_OPTION,
    subscription: str | None = SUBSCRIPTION,
    aggregate: str | None = AGGREGATE,
    everything: bool = typer.Option(False, "--all", help="Every dead letter"),
    as_json: bool = JSON,
    bus: str | None = BUS,
) -> None:
    """Deliver dead letters again (attempts reset); the events waiting behind them follow."""
    sel = _selection(ids or [], subscription, aggregate, everything)
    count = _run(
        app_spec,
        bus,
        lambda a: a.dead_letters.replay(
            sel["ids"],
            subscription=sel["subscription"],
            aggregate_id=sel["aggregate_id"],
            everything=sel["everything"],
        ),
    )
    typer.echo(json.dumps({"replayed": count}) if as_json else f"{count} dead letter(s) replayed")
    if not count and not as_json:
        raise typer.Exit(EXIT_NOTHING_DONE)


@app.command()
def purge(
    ids: list[int] = typer.Argument(None, help="Dead letter ids"),
    app_spec: str = APP_OPTION,
    subscription: str | None = SUBSCRIPTION,
    aggregate: str | None = AGGREGATE,
    everything: bool = typer.Option(False, "--all", help="Every dead letter"),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation"),
    as_json: bool = JSON,
    bus: str | None = BUS,
) -> None:
    """Delete dead letters for good (their events are never delivered to that listener)."""
    sel = _selection(ids or [], subscription, aggregate, everything)
    if not yes and not typer.confirm("Delete these dead letters for good?"):
        raise typer.Exit(EXIT_NOTHING_DONE)
    count = _run(
        app_spec,
        bus,
        lambda a: a.dead_letters.purge(
            sel["ids"],
            subscription=sel["subscription"],
            aggregate_id=sel["aggregate_id"],
            everything=sel["everything"],
        ),
    )
    typer.echo(json.dumps({"purged": count}) if as_json else f"{count} dead letter(s) purged")
    if not count and not as_json:
        raise typer.Exit(EXIT_NOTHING_DONE)
