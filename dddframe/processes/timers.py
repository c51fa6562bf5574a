"""The command a process manager's timer stores: due at the timer's time, it runs the step
bound to the timer (``on_<name>_timeout``) on the instance, unless the timer was cancelled or
moved (its token no longer matches) or the process completed."""

from __future__ import annotations

from dddframe.engine.command import Command

__all__ = ["ProcessTimeout"]


class ProcessTimeout(Command):
    """Fire the timer ``timer`` of the process ``process`` instance ``key``; ``token`` is the
    schedule id the instance recorded when it set the timer."""

    process: str
    key: str
    timer: str
    token: str
