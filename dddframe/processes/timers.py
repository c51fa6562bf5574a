"""The commands a process manager stores as schedules.

:class:`ProcessTimeout` is a timer: due at the timer's time, it runs the step bound to it
(``on_<name>_timeout``) on the instance, unless the timer was cancelled or moved (its token no
longer matches) or the process completed. :class:`ProcessRelease` runs the next entry waiting
behind a held instance (:mod:`dddframe.processes.holds`).
"""

from __future__ import annotations

from dddframe.engine.command import Command

__all__ = ["ProcessRelease", "ProcessTimeout"]


class ProcessTimeout(Command):
    """Fire the timer ``timer`` of the process ``process`` instance ``key``; ``token`` is the
    schedule id the instance recorded when it set the timer."""

    process: str
    key: str
    timer: str
    token: str


class ProcessRelease(Command):
    """Run the first event or timer waiting behind the held instance ``key`` of the process
    ``process``, then hand the hold on to the next (or free the instance)."""

    process: str
    key: str
