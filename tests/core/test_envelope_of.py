"""The readers' fast path (``envelope_of``) builds exactly the envelope ``row_to_envelope``
builds, for well-formed rows and for every kind of hostile cell (which take the checked way)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest

from dddframe.outbox.records import ENVELOPE_COLUMNS, UNDECODABLE, envelope_of, row_to_envelope

GOOD: dict[str, Any] = {
    "position": 7,
    "event_id": "01890a5d-ac96-774b-bcce-b302099a8057",
    "name": "Order:Placed",
    "aggregate_type": "Order",
    "aggregate_id": "1",
    "aggregate_version": 3,
    "event_version": 2,
    "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
    "payload": '{"total": "9.50"}',
    "headers": '{"correlation_id": "c"}',
}

VARIANTS: dict[str, list[Any]] = {
    "event_id": [
        "01890A5D-AC96-774B-BCCE-B302099A8057",
        "{01890a5d-ac96-774b-bcce-b302099a8057}",
        "01890a5dac96774bbcceb302099a8057",
        "01890a5d-ac96-774b-bcce-b302099a805g",
        "0_890a5d-ac96-774b-bcce-b302099a8057",
        "not-a-uuid",
        None,
        12,
    ],
    "name": ["", None, 5, "A:B\x1b[2J"],
    "aggregate_type": [None, 3],
    "aggregate_id": [None, 4],
    "aggregate_version": [None, "5", "x", True, 2**40],
    "event_version": [None, 0, "3", "y"],
    "occurred_at": [datetime(2026, 1, 1), "2026-01-01", None],
    "payload": [b'{"a": 1}', b"\xff", None, ""],
    "headers": [
        "",
        None,
        " {}",
        "{} ",
        "{}x",
        "[]",
        '{"a": 1}',
        "{oops",
        b'{"a": "b"}',
        '{"dddframe-undecodable": "earlier"}',
        "[" * 5000,
    ],
}


def _cases() -> list[dict[str, Any]]:
    cases = [dict(GOOD)]
    for column, values in VARIANTS.items():
        for value in values:
            cases.append({**GOOD, column: value})
    for (a, va), (b, vb) in itertools.combinations(
        [("event_id", "bad"), ("headers", "{oops"), ("occurred_at", datetime(2026, 1, 1))], 2
    ):
        cases.append({**GOOD, a: va, b: vb})
    return cases


@pytest.mark.parametrize(
    "row", _cases(), ids=lambda r: repr({k: r[k] for k in r if r[k] != GOOD[k]})[:60]
)
def test_the_fast_path_builds_the_checked_envelope(row: dict[str, Any]) -> None:
    fast = envelope_of(*(row[c] for c in ENVELOPE_COLUMNS))
    assert fast == row_to_envelope(row)
    assert type(fast.event_id) is type(row_to_envelope(row).event_id)
    assert fast.occurred_at.tzinfo is not None


def test_a_well_formed_row_is_not_flagged() -> None:
    env = envelope_of(*(GOOD[c] for c in ENVELOPE_COLUMNS))
    assert UNDECODABLE not in env.headers and str(env.event_id) == GOOD["event_id"]


def test_the_readers_hand_out_cells_in_envelope_of_order() -> None:
    from dddframe.outbox.reader import ROW_FIELDS

    assert ROW_FIELDS == ENVELOPE_COLUMNS
