"""The database bus runs the shared contract suite on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from typing import Any

from dddframe.bus import EventBus, RetryPolicy
from dddframe.bus.database import DatabaseBus
from tests.contract.conftest import OutboxHarnessBase


class DatabaseHarness(OutboxHarnessBase):
    name = "database"

    def __init__(self, url: str, request: Any) -> None:
        super().__init__(url)

    def bus(self, retry: RetryPolicy) -> EventBus:
        return DatabaseBus(retry=retry, run_interval=0.05, concurrency=4, lease_ttl=5)


HARNESSES = {
    "database-sqlite": (DatabaseHarness, "sqlite"),
    "database-postgresql": (DatabaseHarness, "postgresql"),
    "database-mariadb": (DatabaseHarness, "mariadb"),
}
