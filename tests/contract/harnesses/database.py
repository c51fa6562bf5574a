"""Harnesses of the transports that deliver straight from the outbox: in-process and database."""

from __future__ import annotations

from dddframe.bus import EventBus, RetryPolicy
from dddframe.bus.database import DatabaseBus
from dddframe.bus.inprocess import InProcessBus
from dddframe.testing.contract import OutboxHarness


class InProcessHarness(OutboxHarness):
    name = "inprocess"
    shares_work = False  # one application process per database

    def bus(self, retry: RetryPolicy) -> EventBus:
        return InProcessBus(retry=retry, poll_interval=0.05, concurrency=4)


class DatabaseHarness(OutboxHarness):
    name = "database"

    def bus(self, retry: RetryPolicy) -> EventBus:
        return DatabaseBus(retry=retry, run_interval=0.05, concurrency=4, lease_ttl=2)
