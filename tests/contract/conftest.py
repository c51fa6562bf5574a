"""The shipped conformance suite (dddframe.testing.contract) on each of our transports.

Each test_<transport>.py subclasses TransportContract once per backend and provides the
``harness`` fixture; expected_failures lists, per backend, the scenarios that fail today with
the defect that makes them fail (strict xfails: a fix turns them into failures until removed).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from dddframe.testing.contract import ContractSuite


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[Any]:
    """A scenario that skips itself while running (its harness cannot do something) must be
    declared in the class's not_applicable, so the generated table never shows it as passing."""
    outcome = yield
    report = outcome.get_result()
    cls = getattr(item, "cls", None)
    if (
        call.when == "call"
        and report.skipped
        and not hasattr(report, "wasxfail")
        and isinstance(cls, type)
        and issubclass(cls, ContractSuite)
    ):
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} skipped while running ({report.longrepr}); declare it in "
            f"{cls.__name__}.not_applicable with the reason."
        )


_outcomes: dict[str, int] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/contract/test_" not in report.nodeid or "test_catalog" in report.nodeid:
        return
    if report.when == "call" or (report.when == "setup" and report.skipped):
        kind = "known failure" if hasattr(report, "wasxfail") else report.outcome
        _outcomes[kind] = _outcomes.get(kind, 0) + 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line with the counts of the conformance suite, at the end of every run of it."""
    if _outcomes:
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(_outcomes.items()))
        terminalreporter.write_line(f"dddframe conformance suite: {counts}")
