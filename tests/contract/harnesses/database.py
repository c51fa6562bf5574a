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


# What fails today on every transport that reads the outbox (strict xfails; remove when fixed).
OUTBOX_DEFECTS: dict[str, str] = {}
SQLITE_NOT_APPLICABLE = {
    "test_out_of_order_commits_with_rollbacks": "SQLite serializes writers, so transactions "
    "cannot commit out of order",
    "test_reconnect_after_connection_drop": "SQLite has no server connection to drop",
}
