"""The suite's own mechanics: scenario metadata, declared failures, the generated table."""

from __future__ import annotations

import pytest

from dddframe.testing.contract import (
    ContractSuite,
    OutboxContract,
    TransportContract,
    markdown_table,
    scenario,
    scenarios_of,
)


def test_a_misspelled_expected_failure_is_refused_at_class_definition() -> None:
    with pytest.raises(TypeError, match="names no scenario"):

        class Typo(OutboxContract):
            expected_failures = {"test_nothing_deliverd_before_commit": "typo"}


def test_a_scenario_cannot_be_both_failing_and_not_applicable() -> None:
    with pytest.raises(TypeError, match="both"):

        class Both(OutboxContract):
            expected_failures = {"test_duplicate_event_id_rejected": "x"}
            not_applicable = {"test_duplicate_event_id_rejected": "y"}


def test_scenario_titles_may_not_break_the_table() -> None:
    with pytest.raises(ValueError, match="not allowed"):
        scenario("a | b")


def test_the_table_shows_pass_known_failures_and_not_applicable() -> None:
    class Mine(OutboxContract):
        transport_label = "mine"
        expected_failures = {"test_nothing_stored_on_rollback": "mine#1: rollback leaks"}
        not_applicable = {"test_duplicate_event_id_rejected": "no unique index"}

    table = markdown_table([Mine])
    assert (
        "| Nothing is delivered before the transaction commits | NServiceBus outbox | pass |"
        in (table)
    )
    assert "| fails: mine#1 |" in table
    assert "| n/a |" in table
    assert "4 scenarios on 1 transports: 3 runs, 2 pass, 1 known failures, 1 not applicable." in (
        table
    )
    assert "* mine, Nothing is stored or delivered when the transaction rolls back: mine#1" in table


def test_every_scenario_is_an_async_method_with_a_title_and_unique_name() -> None:
    found = list(scenarios_of(TransportContract))
    assert len(found) >= 30
    assert len({name for name, _ in found}) == len(found)
    assert len({s.title for _, s in found}) == len(found)
    for name, _ in found:
        assert name.startswith("test_")
    assert issubclass(TransportContract, ContractSuite)
