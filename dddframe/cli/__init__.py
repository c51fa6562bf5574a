"""The ``dddframe`` command line (typer). Each command group lives in its own module."""

from __future__ import annotations

import typer

from dddframe.cli import dead_letters, events, relay, schema, status, worker

app = typer.Typer(
    name="dddframe",
    help="Operate dddframe applications: workers, relays, dead letters, schema.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(schema.app, name="schema")
app.add_typer(dead_letters.app, name="dead-letters")
app.command("worker")(worker.worker)
app.command("relay")(relay.relay)
app.command("status")(status.status)
app.add_typer(events.app, name="events")


def main() -> None:
    app()


__all__ = ["app", "main"]
