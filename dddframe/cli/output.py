"""Stored data shown by the CLI is data, never markup or terminal control.

Error texts, tracebacks, payloads and names come from the database or a broker and may hold
anything: Rich markup (``[/]`` raises a MarkupError, ``[link=...]`` makes a link), ANSI or OSC
escape sequences (recolour the terminal, set its title, write hyperlinks), carriage returns
that overwrite what was printed. :func:`safe` is the one way the CLI turns such a value into
text, for every table cell and line built from stored data; :func:`console` is where tables go.

>>> safe("[red on red]hidden[/] \\x1b]8;;http://x\\x07link\\x1b]8;;\\x07 \\x1b[2J")
'\\\\[red on red]hidden\\\\[/] ]8;;http://xlink]8;; [2J'
>>> safe("line one\\n\\tline two\\r", markup=False)
'line one\\n\\tline two'
"""

from __future__ import annotations

import re

from rich.console import Console
from rich.markup import escape

__all__ = ["console", "safe"]

# C0 controls but tab and newline, DEL, C1 controls (0x9b is a one-byte CSI), and the Unicode
# bidirectional overrides and isolates that reorder what the terminal shows.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def safe(value: object, *, markup: bool = True) -> str:
    """``value`` as text without control characters (tab and newline kept), and with Rich markup
    escaped unless ``markup=False`` (for plain ``typer.echo`` lines, where brackets are inert)."""
    text = _CONTROL.sub("", str(value))
    return escape(text) if markup else text


def console(*, stderr: bool = False) -> Console:
    """A console for one command's output, made when the command runs so that it reads the
    terminal's width (or ``COLUMNS``) then. Off a terminal (a pipe, a script) it is 80 columns
    wide, and tables fold long cells onto more lines instead of cutting them."""
    return Console(stderr=stderr, highlight=False)
