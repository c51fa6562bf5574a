"""Process managers (sagas): long-lived, correlated state that reacts to events, sends
commands and sets durable timers. See :class:`ProcessManager` and ``module.process()``."""

from dddframe.processes.binding import ProcessBinding
from dddframe.processes.context import ProcessContext
from dddframe.processes.manager import ProcessManager

__all__ = ["ProcessBinding", "ProcessContext", "ProcessManager"]
