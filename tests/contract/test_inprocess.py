"""The in-process bus runs the whole conformance suite (SQLite outbox)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dddframe.testing.contract import TransportContract
from tests.contract.harnesses.database import InProcessHarness
from tests.services import database_url


class TestInProcess(TransportContract):
    transport_label = "in-process"
    expected_failures: dict[str, str] = {}

    @pytest.fixture
    def harness(self, tmp_path: Path) -> InProcessHarness:
        return InProcessHarness(database_url("sqlite", tmp_path))
