"""The Kafka bus runs the whole conformance suite on the test broker (PostgreSQL outbox)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dddframe.testing.contract import TransportContract
from tests.contract.harnesses.kafka import KafkaHarness
from tests.services import database_url


class TestKafka(TransportContract):
    transport_label = "Kafka"
    expected_failures = {}

    @pytest.fixture
    def harness(self, tmp_path: Path) -> KafkaHarness:
        return KafkaHarness(database_url("postgresql", tmp_path))
