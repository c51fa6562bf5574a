"""``dddframe events tail``: print outbox events in commit order, and follow new ones live.

Reads by gap-free position (sequencing committed rows first, as any process may), so a
transaction that commits late shows up in its place and is never skipped. ``--json`` prints one
JSON object per line. A long backlog shows a progress bar on stderr when it is a terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable

import typer
from rich.progress import Progress

from dddframe.cli.loading import load_app
from dddframe.cli.output import console, safe
from dddframe.cli.process import stop_on_signals
from dddframe.database import Database
from dddframe.domain.envelope import Envelope
from dddframe.outbox.reader import OutboxReader
from dddframe.outbox.sequencer import Sequencer

__all__ = ["app", "format_event", "tail_events"]

app = typer.Typer(help="Read the outbox: print events in commit order, follow new ones.")

_BATCH = 500


def format_event(env: Envelope, *, as_json: bool) -> str:
    """One line per event: ``position name aggregate event_id correlation_id``, or JSON."""
    if as_json:
        return json.dumps(
            {
                "position": env.position,
                "event_id": str(env.event_id),
                "name": env.name,
                "aggregate_type": env.aggregate_type,
                "aggregate_id": env.aggregate_id,
                "aggregate_version": env.aggregate_version,
                "occurred_at": env.occurred_at.isoformat(),
                "headers": env.headers,
                "payload": env.payload(),
            },
            separators=(",", ":"),
        )
    aggregate = f"{env.aggregate_type}:{env.aggregate_id}" if env.aggregate_id else "-"
    return safe(
        f"{env.position:>8} {env.occurred_at.isoformat(timespec='milliseconds')} "
        f"{env.name} {aggregate} v{env.aggregate_version or '-'} {env.event_id} "
        f"correlation={env.correlation_id or '-'} {env.payload_json}",
        markup=False,
    )


async def tail_events(
    database: Database,
    emit: Callable[[Envelope], None],
    *,
    last: int = 10,
    after: int | None = None,
    names: list[str] | None = None,
    follow: bool = False,
    poll_interval: float = 0.5,
    count: int | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Emit events after ``after`` (default: the last ``last``), then, with ``follow``, new ones
    until ``stop`` is set or ``count`` events were emitted. Returns the number emitted.
    """
    reader = OutboxReader()
    sequencer = Sequencer()
    stop = stop or asyncio.Event()
    emitted = 0
    async with database.connect() as conn:
        await sequencer.sequence(conn)
        head = await reader.head(conn)
    position = max(0, head - last) if after is None else after
    begin = position
    tty = sys.stderr.isatty()
    with Progress(console=console(stderr=True), transient=True, disable=not tty) as progress:
        task = progress.add_task("reading outbox", total=max(head - position, 0))
        while not stop.is_set():
            async with database.connect() as conn:
                if follow:
                    await sequencer.sequence(conn)
                envelopes, upto = await reader.read(
                    conn, after=position, limit=_BATCH, names=names or None
                )
            for env in envelopes:
                emit(env)
                emitted += 1
                if count is not None and emitted >= count:
                    return emitted
            progress.update(task, completed=min(upto, head) - begin)
            if upto > position:
                position = upto
                continue
            if not follow:
                return emitted
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll_interval):
                    await stop.wait()
    return emitted


@app.command("tail")
def tail(
    app_spec: str = typer.Option(..., "--app", help="package.module:app or a factory"),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events"),
    name: list[str] = typer.Option([], "--name", help="Only these event names (repeatable)"),
    last: int = typer.Option(10, "--last", help="Start with the last N events"),
    after: int | None = typer.Option(None, "--after", help="Start after this position instead"),
    count: int | None = typer.Option(None, "--count", help="Exit after printing N events"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line"),
    poll_interval: float = typer.Option(0.5, "--poll-interval", help="Seconds between polls"),
) -> None:
    """Print the last events of the outbox in commit order; --follow prints new ones live.

    Exit code 0 (also on Ctrl-C), 1 when the application or database cannot be read, 2 on a
    usage error.
    """
    if last < 0 or (count is not None and count < 1) or poll_interval <= 0:
        raise typer.BadParameter("--last must be >= 0, --count >= 1, --poll-interval > 0")

    async def run() -> None:
        application = load_app(app_spec, consume=False)
        stop = asyncio.Event()
        stop_on_signals(stop)
        async with application:
            await tail_events(
                application.database,
                lambda env: typer.echo(format_event(env, as_json=as_json)),
                last=last,
                after=after,
                names=name,
                follow=follow,
                poll_interval=poll_interval,
                count=count,
                stop=stop,
            )

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        return
