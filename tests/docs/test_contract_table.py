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
