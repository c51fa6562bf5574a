"""The database bus runs the whole conformance suite on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from pathlib import Path

import pytest

from dddframe.testing.contract import TransportContract
from tests.contract.harnesses.database import OUTBOX_DEFECTS, SQLITE_NOT_APPLICABLE, DatabaseHarness
from tests.services import database_url


class TestDatabaseSqlite(TransportContract):
    transport_label = "database (SQLite)"
    expected_failures = OUTBOX_DEFECTS
    not_applicable = SQLITE_NOT_APPLICABLE

    @pytest.fixture
    def harness(self, tmp_path: Path) -> DatabaseHarness:
        return DatabaseHarness(database_url("sqlite", tmp_path))


class TestDatabasePostgres(TransportContract):
    transport_label = "database (PostgreSQL)"
    expected_failures = OUTBOX_DEFECTS

    @pytest.fixture
    def harness(self, tmp_path: Path) -> DatabaseHarness:
        return DatabaseHarness(database_url("postgresql", tmp_path))


class TestDatabaseMariadb(TransportContract):
    transport_label = "database (MariaDB)"
    expected_failures = OUTBOX_DEFECTS

    @pytest.fixture
    def harness(self, tmp_path: Path) -> DatabaseHarness:
        return DatabaseHarness(database_url("mariadb", tmp_path))
