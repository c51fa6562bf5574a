"""One exit-code convention for every ``dddframe`` command, and one way errors reach the user.

====  ======================  ================================================================
code  name                    meaning
====  ======================  ================================================================
0     ``EXIT_OK``             done; also "nothing to list" (an empty list is an answer)
1     ``EXIT_FAILED``         could not do it: the database or broker could not be reached or
                              read, or an unexpected error (``--debug`` shows its traceback)
2     ``EXIT_USAGE``          usage or configuration error: a bad option, an ``--app`` that
                              does not load, a command the app's bus does not support
3     ``EXIT_DEAD_LETTERS``   ``status``: dead letters exist
4     ``EXIT_LAGGING``        ``status``: a subscription lags more than ``--max-lag`` events or
                              ``--max-lag-seconds``
5     ``EXIT_NOTHING_DONE``   ``dead-letters show/replay/purge``: no dead letter matched, or the
                              confirmation was declined; with ``--json`` the output says so
                              (``null``, ``{"replayed": 0}``) and the exit is 0
6     ``EXIT_SCHEMA``         the framework schema is missing or behind this dddframe's version
                              (``schema --check``, ``worker``, ``relay``): run the migrations
====  ======================  ================================================================

An error is one line on stderr, ``dddframe: <what went wrong>``, stripped of control
characters, with its exit code; ``dddframe --debug <command>`` (or ``DDDFRAME_DEBUG=1``) prints
the full traceback as well.

>>> exit_code_of(ConfigurationError("bad")), exit_code_of(SchemaNotReady("old"))
(2, 6)
>>> exit_code_of(OSError("refused")), exit_code_of(KeyError("x"))
(1, 1)
>>> one_line(ValueError("first line\\n  second\\x1b[2J line"))
'ValueError: first line second[2J line'
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer

from dddframe.cli.output import safe
from dddframe.errors import (
    ConfigurationError,
    DddframeError,
    InvalidArgument,
    SchemaNotReady,
    UsageError,
)

__all__ = [
    "EXIT_CODES",
    "EXIT_DEAD_LETTERS",
    "EXIT_FAILED",
    "EXIT_LAGGING",
    "EXIT_NOTHING_DONE",
    "EXIT_OK",
    "EXIT_SCHEMA",
    "EXIT_USAGE",
    "exit_code_of",
    "exit_codes_help",
    "guarded",
    "one_line",
    "set_debug",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DEAD_LETTERS = 3
EXIT_LAGGING = 4
EXIT_NOTHING_DONE = 5
EXIT_SCHEMA = 6

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "done (an empty list too)",
    EXIT_FAILED: "failed: database or broker unreachable, or an unexpected error",
    EXIT_USAGE: "usage or configuration error",
    EXIT_DEAD_LETTERS: "status: dead letters exist",
    EXIT_LAGGING: "status: lag over --max-lag / --max-lag-seconds",
    EXIT_NOTHING_DONE: "no dead letter matched, or declined (0 with --json)",
    EXIT_SCHEMA: "schema missing or behind: run the migrations",
}

DEBUG_ENV = "DDDFRAME_DEBUG"
_MAX_LINE = 2000  # an error text from stored data may be megabytes

P = ParamSpec("P")
R = TypeVar("R")
_debug = False


def set_debug(enabled: bool) -> None:
    """Show tracebacks of errors (``dddframe --debug``)."""
    global _debug
    _debug = enabled


def _debugging() -> bool:
    return _debug or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")


def exit_code_of(exc: BaseException) -> int:
    """The exit code of an error that ended a command."""
    if isinstance(exc, SchemaNotReady):
        return EXIT_SCHEMA
    if isinstance(exc, ConfigurationError | UsageError | InvalidArgument):
        return EXIT_USAGE
    return EXIT_FAILED


def one_line(exc: BaseException) -> str:
    """The error as one line: its message, whitespace runs joined, control characters removed;
    prefixed with the class name unless it is one of dddframe's own errors."""
    text = " ".join(safe(str(exc), markup=False).split())[:_MAX_LINE] or "(no message)"
    return text if isinstance(exc, DddframeError) else f"{type(exc).__name__}: {text}"


def guarded(command: Callable[P, R]) -> Callable[P, R]:
    """Wrap a command so that an error ends it with one line on stderr and its exit code."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException, KeyboardInterrupt):
            raise  # exits and usage errors the command line reports itself
        except Exception as exc:
            if _debugging():
                traceback.print_exception(exc, file=sys.stderr)
            hint = "" if _debugging() else " (dddframe --debug ... shows the traceback)"
            code = exit_code_of(exc)
            typer.echo(f"dddframe: {one_line(exc)}{hint if code == EXIT_FAILED else ''}", err=True)
            raise typer.Exit(code) from exc

    return run


def exit_codes_help() -> str:
    """The convention as the lines ``dddframe --help`` shows."""
    return "\n\n".join(f"{code}: {meaning}" for code, meaning in EXIT_CODES.items())
