"""The relay's one-pass record building gives the records (and sizes) of the general codec."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from dddframe.bus.codec import envelope_headers
from dddframe.bus.kafka.records import (
    encode_headers,
    from_record,
    record_size,
    sized_record,
    to_record,
)
from dddframe.bus.kafka.topics import ROUTE_CLUSTER, ROUTE_TOPIC
from dddframe.domain.envelope import Envelope

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
