"""Helpers for testing applications built on dddframe (the pytest plugin loads automatically)."""

from dddframe.testing.faults import FaultInjector, InjectedFault
from dddframe.testing.plugin import reset_database

__all__ = ["FaultInjector", "InjectedFault", "reset_database"]
