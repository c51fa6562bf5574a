"""The in-process transport: delivers committed outbox events inside the application process."""

from dddframe.bus.inprocess.bus import DeliveryFaults, InProcessBus

__all__ = ["DeliveryFaults", "InProcessBus"]
