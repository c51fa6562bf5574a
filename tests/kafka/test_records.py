"""The relay's one-pass record building gives the records (and sizes) of the general codec."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from dddframe.bus.codec import envelope_headers
from dddframe.bus.kafka.records import (
    HeaderCache,
    Record,
    encode_headers,
    from_record,
    record_size,
    row_record,
    sized_record,
    to_record,
)
from dddframe.bus.kafka.topics import ROUTE_CLUSTER, ROUTE_TOPIC
from dddframe.domain.envelope import Envelope
from dddframe.outbox.reader import ROW_FIELDS
from dddframe.outbox.records import row_to_envelope

ENVELOPES = [
    Envelope.new("Order:Placed", '{"n": 1}', aggregate_type="Order", aggregate_id="7",
                 aggregate_version=3, headers={"correlation_id": "c1"}),
    Envelope.new("shop.sell", "{}", headers={ROUTE_TOPIC: "t.sell", ROUTE_CLUSTER: "eu",
                                            "x-action": "buy"}),
    Envelope.new("Order:Placed", '{"é": "ü"}', aggregate_type="Ordér", aggregate_id="ключ",
                 headers={"x-ключ": "значение", "traceparent": "00-ab-cd-01"}),
    Envelope(event_id=uuid.uuid4(), name="Order:Paid", payload_json="[]", event_version=4,
             occurred_at=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)),
    Envelope.new("Order:Placed", "{}", aggregate_id="1", headers={"dddframe-name": "spoof"}),
]  # fmt: skip


@pytest.mark.parametrize("env", ENVELOPES)
def test_sized_record_is_the_general_record_and_its_size(env: Envelope) -> None:
    key = env.aggregate_id.encode() if env.aggregate_id is not None else None
    general = (key, env.payload_json.encode(), encode_headers(envelope_headers(env)))
    record, size = sized_record(env)
    assert record == general == to_record(env)
    assert size == record_size(general)
    back = from_record(record[2], record[1])
    assert (back.event_id, back.name, back.aggregate_id) == (
        env.event_id,
        env.name,
        key and env.aggregate_id,
    )


_ID = "0b7c7e0e-2b6f-4f5e-9d1a-3c2b1a0f9e8d"
_AT = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
_ROW = (7, _ID, "Order:Placed", "Order", "7", 3, 1, _AT, '{"n": 1}', '{"correlation_id": "c1"}')


def _with(**cells: object) -> tuple[object, ...]:
    return tuple(cells.get(f, v) for f, v in zip(ROW_FIELDS, _ROW, strict=True))


CLEAN_ROWS = [
    _ROW,
    _with(headers=""),
    _with(headers=None),
    _with(headers="{}"),
    _with(aggregate_type=None, aggregate_id=None, aggregate_version=None),
    _with(event_version=None),
    _with(event_version=0),
    _with(occurred_at=datetime(2026, 1, 2, 3, 4, 5)),  # naive UTC (SQLite, MariaDB)
    _with(name="Ordér:Placed", aggregate_id="ключ", payload='{"é": "ü"}'),
    _with(headers='{"x-ключ": "значение", "traceparent": "00-ab-cd-01", "a": "1", "a": "2"}'),
    _with(headers=' {"a": "b"}'),
    _with(headers='{"a": "b"}\n'),
    _with(headers='{"a": "\\u00e9\\"", "b": ""}'),
    _with(event_version=4, aggregate_version=10**12),
]
HOSTILE_ROWS = [  # row_to_envelope repairs or reports these: the envelope's way
    _with(event_id=_ID.upper()),
    _with(event_id="{" + _ID + "}"),
    _with(event_id=_ID.replace("-", "")),
    _with(event_id="not-a-uuid"),
    _with(event_id=uuid.UUID(_ID)),
    _with(name=""),
    _with(name=None),
    _with(headers="{oops"),
    _with(headers='{"a": "b"} x'),
    _with(headers='{"a": "b"}{}'),
    _with(headers="[1]"),
    _with(headers='{"n": 1}'),
    _with(headers=b'{"a": "b"}'),
    _with(headers=0),
    _with(headers='{"dddframe-cluster": "eu"}'),
    _with(headers='{"dddframe-topic": "t"}'),
    _with(headers='{"dddframe-undecodable": "why"}'),
    _with(payload=b"{}"),
    _with(payload=None),
    _with(occurred_at="2026-01-02"),
    _with(aggregate_version="3"),
    _with(aggregate_version=True),
    _with(event_version="1"),
    _with(aggregate_id=7),
    _with(aggregate_type=7),
]


def _envelope_way(row: tuple[object, ...]) -> tuple[Record, int]:
    return sized_record(row_to_envelope(dict(zip(ROW_FIELDS, row, strict=True))))


@pytest.mark.parametrize("row", CLEAN_ROWS)
def test_row_record_is_the_record_of_the_rows_envelope(row: tuple[object, ...]) -> None:
    seen: HeaderCache = {}
    made = row_record(row, seen)
    assert made is not None
    name, record, size = made
    assert name == row[2]
    assert (record, size) == _envelope_way(row)
    assert row_record(row, seen) == made  # the headers remembered by their text


@pytest.mark.parametrize("row", HOSTILE_ROWS)
def test_row_record_leaves_hostile_rows_to_the_envelope(row: tuple[object, ...]) -> None:
    seen: HeaderCache = {}
    assert row_record(row, seen) is None
    assert row_record(row, seen) is None


def test_shared_headers_are_not_shared_between_records() -> None:
    seen: HeaderCache = {}
    first, second = row_record(_ROW, seen), row_record(_with(aggregate_id="8"), seen)
    assert first is not None and second is not None
    assert first[1][2] is not second[1][2]
    assert first[1][2][0] == second[1][2][0] == ("correlation_id", b"c1")
