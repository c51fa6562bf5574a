"""The durable database bus: ``Application(..., bus="database")`` or ``DatabaseBus(...)``."""

from dddframe.bus.database.bus import DatabaseBus
from dddframe.bus.database.half import HalfMessage

__all__ = ["DatabaseBus", "HalfMessage"]
