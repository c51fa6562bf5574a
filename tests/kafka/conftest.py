"""Fixtures of the Kafka bus tests: the session's broker and unique names per test."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kafka import broker
from tests.services import database_url


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return broker.bootstrap()


@pytest.fixture
def names() -> str:
    """A unique prefix for the topics and groups of one test."""
    return broker.unique("t") + "."


@pytest.fixture
def pg_url(tmp_path: Any) -> str:
    return database_url("postgresql", tmp_path)
