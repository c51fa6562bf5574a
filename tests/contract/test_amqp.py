"""The AMQP bus runs the whole conformance suite on RabbitMQ (PostgreSQL outbox)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dddframe.testing.contract import TransportContract
from tests.contract.harnesses.amqp import AmqpHarness
from tests.services import AMQP_URL, database_url, reachable, require


class TestAmqp(TransportContract):
    transport_label = "AMQP"
    expected_failures = {}

    @pytest.fixture
    def harness(self, tmp_path: Path) -> AmqpHarness:
        require("RabbitMQ", reachable(AMQP_URL, 5672), AMQP_URL)
        return AmqpHarness(database_url("postgresql", tmp_path))
