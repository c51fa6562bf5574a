"""``dddframe projections status|rebuild``: the read models of an application.

``status`` shows each projection's generation, position, lag (events and seconds) and any
rebuild. ``rebuild NAME`` replays the retained outbox history into a fresh generation while the
live one keeps serving, then switches to it atomically; a progress bar with an ETA goes to
stderr when it is a terminal. ``--resume`` continues an interrupted rebuild, ``--abandon`` drops
it; neither touches the live tables. Stored names are shown as data (:mod:`dddframe.cli.output`).
Exit codes (:mod:`dddframe.cli.exits`): 0 done, 1 failed (history removed by retention, a
rebuild in the way, the database), 2 bad usage (an unknown projection, bad options).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from dddframe.app.application import Application
from dddframe.cli.loading import load_app, prepare_schema
from dddframe.cli.output import console, safe
from dddframe.projections import RebuildProgress, RebuildResult

app = typer.Typer(
    help="Projections (read models): status and blue/green rebuilds.", no_args_is_help=True
)
T = TypeVar("T")

APP_OPTION = typer.Option(..., "--app", help="package.module:app or a factory")
JSON = typer.Option(False, "--json", help="Machine-readable output")


def _run(app_spec: str, action: Callable[[Application], Awaitable[T]]) -> T:
    async def main() -> T:
        application = load_app(app_spec, consume=False)
        await prepare_schema(application, create=False)
        async with application:
            return await action(application)

    return asyncio.run(main())


@app.command()
def status(app_spec: str = APP_OPTION, as_json: bool = JSON) -> None:
    """Each projection's active generation, position, lag and rebuild."""
    found = _run(app_spec, lambda a: a.projections.status())
    if as_json:
        typer.echo(json.dumps({"projections": [s.as_dict() for s in found]}, indent=2))
        return
    table = Table(title=f"{len(found)} projection(s)")
    for column in ("name", "generation", "position", "head", "lag", "lag (s)", "rebuild"):
        table.add_column(column, overflow="fold")
    for s in found:
        rebuild = ""
        if s.rebuild is not None:
            rebuild = (
                f"g{s.rebuild.generation} {safe(s.rebuild.state)} at {s.rebuild.position}"
                f"/{s.rebuild.target}"
            )
        table.add_row(
            safe(s.name),
            str(s.generation),
            str(s.position),
            str(s.head),
            str(s.lag_events),
            f"{s.lag_seconds:.1f}",
            rebuild,
        )
    console().print(table)


@contextmanager
def _progress(show: bool) -> Iterator[Callable[[RebuildProgress], None] | None]:
    if not show:
        yield None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("positions, ETA"),
        TimeRemainingColumn(),
        console=console(stderr=True),
        transient=False,
    )
    task = bar.add_task("rebuilding", total=None)

    def update(p: RebuildProgress) -> None:
        bar.update(
            task,
            description=f"{safe(p.name)} g{p.generation}",
            total=max(p.head - p.start, 1),
            completed=p.position - p.start,
        )

    with bar:
        yield update


@app.command()
def rebuild(
    name: str = typer.Argument(..., help="The projection's name (see `status`)"),
    app_spec: str = APP_OPTION,
    from_position: int | None = typer.Option(
        None, "--from", min=0, help="Replay the events after this outbox position only"
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted rebuild"),
    abandon: bool = typer.Option(
        False, "--abandon", help="Drop an interrupted rebuild (the live tables stay)"
    ),
    batch_size: int = typer.Option(500, "--batch-size", min=1, help="Events per transaction"),
    as_json: bool = JSON,
) -> None:
    """Rebuild a projection into a fresh generation, then switch to it atomically."""
    if resume and abandon:
        raise typer.BadParameter("give --resume or --abandon, not both")
    if from_position is not None and (resume or abandon):
        raise typer.BadParameter(
            "--from starts a new rebuild; it does not go with --resume/--abandon"
        )
    if abandon:
        generation = _run(app_spec, lambda a: a.projections.abandon(name))
        if as_json:
            typer.echo(json.dumps({"abandoned": generation}))
        else:
            typer.echo(
                f"abandoned the rebuild of {safe(name, markup=False)} (generation {generation})"
            )
        return
    show = not as_json and console(stderr=True).is_terminal
    with _progress(show) as progress:

        async def act(a: Application) -> RebuildResult:
            if resume:
                return await a.projections.resume(name, batch_size=batch_size, progress=progress)
            return await a.projections.rebuild(
                name, from_position=from_position, batch_size=batch_size, progress=progress
            )

        try:
            result = _run(app_spec, act)
        except KeyboardInterrupt:
            typer.echo(
                f"dddframe: the rebuild of {safe(name, markup=False)} was interrupted; the live "
                "projection is untouched. Continue it with --resume or drop it with --abandon.",
                err=True,
            )
            raise typer.Exit(1) from None
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "name": result.name,
                    "generation": result.generation,
                    "previous": result.previous,
                    "built_through": result.built_through,
                    "applied": result.applied,
                }
            )
        )
        return
    typer.echo(
        f"{safe(result.name, markup=False)}: generation {result.generation} is active (built "
        f"through position {result.built_through}, {result.applied} events replayed)"
    )
