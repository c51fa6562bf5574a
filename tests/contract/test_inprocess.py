"""The in-process bus runs the whole conformance suite (SQLite outbox)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dddframe.testing.contract import TransportContract
from tests.contract.harnesses.database import (
    OUTBOX_DEFECTS,
    SQLITE_NOT_APPLICABLE,
    InProcessHarness,
)
from tests.services import database_url


class TestInProcess(TransportContract):
    transport_label = "in-process"
    expected_failures = OUTBOX_DEFECTS
    not_applicable = {
        **SQLITE_NOT_APPLICABLE,
        "test_two_consumers_share_a_subscription": "the in-process bus runs one consuming "
        "process per database",
    }

    @pytest.fixture
    def harness(self, tmp_path: Path) -> InProcessHarness:
        return InProcessHarness(database_url("sqlite", tmp_path))
