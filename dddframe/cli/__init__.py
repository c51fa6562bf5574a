"""The ``dddframe`` command line (typer). Each command group lives in its own module; every
command follows one exit-code convention (:mod:`dddframe.cli.exits`)."""

from __future__ import annotations

import typer

from dddframe.cli import (
    dead_letters,
    events,
    processes,
    projections,
    relay,
    schedules,
    schema,
    status,
    worker,
)
from dddframe.cli.exits import exit_codes_help, guarded, set_debug

app = typer.Typer(
    name="dddframe",
    help="Operate dddframe applications: workers, relays, dead letters, schedules, processes, "
    "projections, schema.",
    epilog="Exit codes: " + exit_codes_help(),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _options(
    debug: bool = typer.Option(
        False, "--debug", help="Print the full traceback of an error, not only its one line"
    ),
) -> None:
    set_debug(debug)


app.add_typer(schema.app, name="schema")
app.add_typer(dead_letters.app, name="dead-letters")
app.command("worker", epilog="Exit codes: " + exit_codes_help())(guarded(worker.worker))
app.command("relay", epilog="Exit codes: " + exit_codes_help())(guarded(relay.relay))
app.command("status", epilog="Exit codes: " + exit_codes_help())(guarded(status.status))
app.add_typer(events.app, name="events")
app.add_typer(schedules.app, name="schedules")
app.add_typer(projections.app, name="projections")
app.add_typer(processes.app, name="processes")
_GROUPS = (schema.app, dead_letters.app, events.app, schedules.app, projections.app, processes.app)
for _group in _GROUPS:
    _group.pretty_exceptions_enable = False
    for _info in _group.registered_commands:
        if _info.callback is not None:
            _info.callback = guarded(_info.callback)
            _info.epilog = _info.epilog or "Exit codes: " + exit_codes_help()
    if _group.registered_callback is not None and _group.registered_callback.callback:
        _group.registered_callback.callback = guarded(_group.registered_callback.callback)


def main() -> None:
    app()


__all__ = ["app", "main"]
