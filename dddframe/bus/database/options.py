"""The database bus's listener options: it takes only the common ``listen()`` parameters.

>>> DatabaseListenerOptions.names()
[]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dddframe.bus.options import ListenerOptions

__all__ = ["DatabaseListenerOptions"]


@dataclass(frozen=True, slots=True)
class DatabaseListenerOptions(ListenerOptions):
    """No transport-specific options (retry, timeout, dead_letter, start are common)."""

    transport: ClassVar[str] = "the database"
