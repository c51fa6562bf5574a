"""Scenario metadata, the base of every scenario class, and the table of scenarios x transports.

Each scenario is an async test method marked with :func:`scenario` (a title and where the
scenario comes from). A transport's test class lists in ``expected_failures`` the scenarios it
is known to fail, with the reason; those run as strict xfails, so a fix that makes one pass
turns it into a failure until the entry is removed.

>>> class Demo(ContractSuite):
...     @scenario("Delivers", origin="Watermill TestPublishSubscribe")
...     async def test_delivers(self, harness: object) -> None: ...
>>> [(name, s.title, s.group) for name, s in scenarios_of(Demo)]
[('test_delivers', 'Delivers', 'Demo')]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import pytest

__all__ = ["ContractSuite", "Scenario", "markdown_table", "scenario", "scenarios_of"]

F = TypeVar("F", bound=Callable[..., Any])
_ATTR = "__dddframe_scenario__"


@dataclass(frozen=True, slots=True)
class Scenario:
    """One scenario: a title for reports, its origin, and the class (group) that holds it."""

    title: str
    origin: str
    group: str = ""


def scenario(title: str, *, origin: str = "") -> Callable[[F], F]:
    """Mark an async test method of a :class:`ContractSuite` subclass as a scenario."""
    if not title or "|" in title or "|" in origin:
        raise ValueError("a scenario needs a title; '|' is not allowed (it breaks the table)")

    def mark(fn: F) -> F:
        setattr(fn, _ATTR, Scenario(title, origin))
        return fn

    return mark


def scenarios_of(cls: type) -> Iterator[tuple[str, Scenario]]:
    """(method name, scenario) of every scenario of ``cls``, class by class in method resolution
    order (so ``TransportContract`` lists its groups in the order of its bases)."""
    seen: set[str] = set()
    for klass in cls.__mro__:
        for name, value in vars(klass).items():
            meta = getattr(value, _ATTR, None)
            if isinstance(meta, Scenario) and name not in seen:
                seen.add(name)
                yield name, Scenario(meta.title, meta.origin, klass.__name__)


class ContractSuite:
    """Base of the scenario classes. A subclass for one transport provides the ``harness``
    fixture (a :class:`~dddframe.testing.contract.harness.TransportHarness`) and may list
    ``expected_failures``: ``{"test_method": "why it fails today"}``."""

    expected_failures: ClassVar[Mapping[str, str]] = {}
    not_applicable: ClassVar[Mapping[str, str]] = {}
    transport_label: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        known = {name for name, _ in scenarios_of(cls)}
        for attr in ("expected_failures", "not_applicable"):
            unknown = sorted(set(getattr(cls, attr)) - known)
            if unknown:
                raise TypeError(
                    f"{cls.__name__}.{attr} names no scenario: {unknown}; the scenarios are "
                    f"the test_* methods marked with @scenario, e.g. {sorted(known)[:3]}"
                )
        both = sorted(set(cls.expected_failures) & set(cls.not_applicable))
        if both:
            raise TypeError(f"{cls.__name__}: {both} cannot be both expected to fail and n/a")

    @pytest.fixture(autouse=True)
    def _dddframe_expected_failure(self, request: pytest.FixtureRequest) -> None:
        name = getattr(request.node, "originalname", request.node.name)
        if name in self.not_applicable:
            pytest.skip(f"not applicable: {self.not_applicable[name]}")
        reason = self.expected_failures.get(name)
        if reason:
            request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


def markdown_table(suites: Sequence[type[ContractSuite]]) -> str:
    """The markdown table of every scenario (rows) on every suite's transport (columns):
    ``pass`` where the scenario passes, ``fails: <reason>`` where it is a known failure,
    ``n/a`` where it cannot apply (its reason is in the suite's ``not_applicable``), and ``—``
    where no suite of that transport runs it. Suites with the same ``transport_label`` (say,
    the contract suite and the fault scenarios of one transport) share a column."""
    if not suites:
        raise ValueError("markdown_table() needs at least one ContractSuite subclass")
    rows: dict[str, tuple[Scenario, dict[str, str]]] = {}
    labels = list(dict.fromkeys(s.transport_label or s.__name__ for s in suites))
    for suite in suites:
        label = suite.transport_label or suite.__name__
        for name, meta in scenarios_of(suite):
            cells = rows.setdefault(name, (meta, {}))[1]
            reason = suite.expected_failures.get(name)
            if name in suite.not_applicable:
                cells[label] = "n/a"
            else:
                cells[label] = f"fails: {_short(reason)}" if reason else "pass"
    lines = [
        "| scenario | origin | " + " | ".join(labels) + " |",
        "|---|---|" + "---|" * len(labels),
    ]
    group = ""
    for meta, cells in rows.values():
        if meta.group != group:
            group = meta.group
            lines.append(f"| **{group}** | |" + " |" * len(labels))
        lines.append(
            f"| {meta.title} | {meta.origin} | "
            + " | ".join(cells.get(label, "—") for label in labels)
            + " |"
        )
    values = [v for _, cells in rows.values() for v in cells.values()]
    failing = sum(v.startswith("fails") for v in values)
    skipped = values.count("n/a")
    runs = len(values) - skipped
    lines.append("")
    lines.append(
        f"{len(rows)} scenarios on {len(labels)} transports: {runs} runs, "
        f"{runs - failing} pass, {failing} known failures, {skipped} not applicable."
    )
    notes = [
        f"* {suite.transport_label or suite.__name__}, {rows[name][0].title}: "
        + " ".join(reason.split())
        for suite in suites
        for attr in ("not_applicable", "expected_failures")
        for name, reason in getattr(suite, attr).items()
    ]
    if notes:
        lines += ["", "Why a scenario fails or does not apply:", "", *notes]
    return "\n".join(lines) + "\n"


def _short(reason: str) -> str:
    # "issue 11 defect 4: unknown names ..." -> "defect 4"; anything else: its first clause.
    head = reason.split(":", 1)[0].strip()
    return head.replace("issue 11 ", "").replace("|", "/") or "known failure"
