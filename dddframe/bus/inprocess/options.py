"""The in-process bus's listener options: it takes only the common ``listen()`` parameters.

>>> InProcessListenerOptions.names()
[]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dddframe.bus.options import ListenerOptions

__all__ = ["InProcessListenerOptions"]


@dataclass(frozen=True, slots=True)
class InProcessListenerOptions(ListenerOptions):
    """No transport-specific options (retry, timeout, dead_letter, start are common)."""

    transport: ClassVar[str] = "the in-process"
