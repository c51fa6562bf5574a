"""The database bus survives the shipped fault scenarios on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dddframe.testing.contract.faults import CrashAfterDispatch, DatabaseRestart, WorkerSigkill
from tests.contract.fault_apps.postgres_cluster import PrivateCluster, private_cluster
from tests.services import database_url

BUS = "tests.contract.fault_apps.buses:database"


@dataclass
class DatabaseFaultHarness:
    name: str
    database_url: str
    bus_factory: str = BUS
    env: dict[str, str] = field(default_factory=dict)

    def child_env(self) -> dict[str, str]:
        return self.env


class TestSqliteFaults(WorkerSigkill, CrashAfterDispatch):
    transport_label = "database (SQLite)"

    @pytest.fixture
    def fault_harness(self, tmp_path: Path) -> DatabaseFaultHarness:
        return DatabaseFaultHarness("database-sqlite", database_url("sqlite", tmp_path))


class TestPostgresFaults(WorkerSigkill, CrashAfterDispatch):
    transport_label = "database (PostgreSQL)"

    @pytest.fixture
    def fault_harness(self, tmp_path: Path) -> DatabaseFaultHarness:
        return DatabaseFaultHarness("database-postgresql", database_url("postgresql", tmp_path))


class TestMariadbFaults(WorkerSigkill, CrashAfterDispatch):
    transport_label = "database (MariaDB)"

    @pytest.fixture
    def fault_harness(self, tmp_path: Path) -> DatabaseFaultHarness:
        return DatabaseFaultHarness("database-mariadb", database_url("mariadb", tmp_path))


@dataclass
class RestartablePostgres(DatabaseFaultHarness):
    cluster: PrivateCluster | None = None

    async def restart_database(self) -> None:
        assert self.cluster is not None
        await self.cluster.restart_database()


class TestPostgresRestart(DatabaseRestart):
    transport_label = "database (PostgreSQL)"

    @pytest.fixture
    def fault_harness(self) -> Iterator[RestartablePostgres]:
        with private_cluster() as cluster:
            yield RestartablePostgres("database-postgresql", cluster.url, cluster=cluster)
