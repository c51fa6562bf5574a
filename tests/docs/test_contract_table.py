"""docs/guarantees/index.md shows the scenarios x transports table generated from the suite.

Regenerate it with ``DDDFRAME_UPDATE_DOCS=1 pytest tests/docs/test_contract_table.py`` (or
print it with ``python -m dddframe.testing.contract`` and the SUITES below).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "guarantees" / "index.md"
START, END = "<!-- contract-table:start -->", "<!-- contract-table:end -->"
SUITES = [
    "tests.contract.test_inprocess:TestInProcess",
    "tests.contract.test_database:TestDatabaseSqlite",
    "tests.contract.test_database:TestDatabasePostgres",
    "tests.contract.test_database:TestDatabaseMariadb",
    "tests.contract.test_kafka:TestKafka",
    "tests.contract.test_amqp:TestAmqp",
    "tests.contract.test_faults_database:TestSqliteFaults",
    "tests.contract.test_faults_database:TestPostgresFaults",
    "tests.contract.test_faults_database:TestPostgresRestart",
    "tests.contract.test_faults_database:TestMariadbFaults",
    "tests.contract.test_faults_kafka:TestKafkaFaults",
    "tests.contract.test_faults_kafka:TestKafkaConnectionDrop",
    "tests.contract.test_faults_kafka:TestKafkaDatabaseRestart",
    "tests.contract.test_faults_amqp:TestAmqpFaults",
    "tests.contract.test_faults_amqp:TestAmqpDatabaseRestart",
]


def _generated() -> str:
    from dddframe.testing.contract import markdown_table

    classes = []
    for spec in SUITES:
        module, _, attr = spec.partition(":")
        classes.append(getattr(importlib.import_module(module), attr))
    return markdown_table(classes)


def test_the_guarantees_page_shows_the_current_table() -> None:
    text = PAGE.read_text(encoding="utf-8")
    assert START in text and END in text, f"{PAGE} lost its {START} ... {END} markers"
    head, rest = text.split(START, 1)
    current, tail = rest.split(END, 1)
    table = _generated()
    if os.environ.get("DDDFRAME_UPDATE_DOCS") == "1":
        PAGE.write_text(f"{head}{START}\n{table}{END}{tail}", encoding="utf-8")
        return
    assert current.strip() == table.strip(), (
        "docs/guarantees/index.md is out of date with the contract suite: run "
        "DDDFRAME_UPDATE_DOCS=1 pytest tests/docs/test_contract_table.py"
    )


def test_the_module_prints_the_same_table() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dddframe.testing.contract", *SUITES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == _generated()


def test_the_suite_has_at_least_30_scenarios_on_every_transport() -> None:
    from dddframe.testing.contract import TransportContract, scenarios_of

    assert len(list(scenarios_of(TransportContract))) >= 30
    assert _generated().count("| **") >= 5  # one group row per scenario class


RESULTS_START, RESULTS_END = "<!-- fault-results:start -->", "<!-- fault-results:end -->"


def test_the_guarantees_page_shows_fault_counts_with_nothing_lost(
    request: pytest.FixtureRequest,
) -> None:
    """The page's counts come from a full run's results file (``DDDFRAME_UPDATE_DOCS=1`` after
    the fault scenarios ran rewrites them); whatever they say, no event was lost."""
    from dddframe.testing.contract.results import read_results, results_path, results_summary

    text = PAGE.read_text(encoding="utf-8")
    assert RESULTS_START in text and RESULTS_END in text, f"{PAGE} lost its fault-results markers"
    head, rest = text.split(RESULTS_START, 1)
    current, tail = rest.split(RESULTS_END, 1)
    entries = read_results(results_path(request.config.cache.mkdir("x").parent.parent))
    assert all(entry.get("lost") == 0 for entry in entries), entries
    if os.environ.get("DDDFRAME_UPDATE_DOCS") == "1" and entries:
        block = f"\n{results_summary(entries)}"
        PAGE.write_text(f"{head}{RESULTS_START}{block}{RESULTS_END}{tail}", encoding="utf-8")
        current = block
    rows = [line for line in current.splitlines() if line.startswith("| ")]
    assert rows and rows[0].startswith("| transport |"), current
    total = next(line for line in rows if line.startswith("| **all** |"))
    assert total.rstrip(" |").endswith("| 0"), f"the recorded fault runs lost events: {total}"
    transports = {line.split("|")[1].strip() for line in rows[1:-1]}  # not the header, total
    assert len(transports) >= 5, f"fault counts cover only {sorted(transports)}"
