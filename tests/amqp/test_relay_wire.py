"""The relay publishes through aiormq with properties it builds itself (issue 14): the content
header on the wire must be the one aio-pika's ``to_message`` would have sent, byte for byte."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pamqp.header import ContentHeader

from dddframe.bus.amqp.messages import POSITION, to_message, to_properties
from dddframe.domain.envelope import Envelope


def _envelopes() -> list[Envelope]:
    return [
        Envelope.new("Shop:Placed", '{"a": 1}', aggregate_type="Order", aggregate_id="o-1"),
        Envelope.new(
            "Shop:Paid",
            '{"note": "caf\\u00e9"}',
            aggregate_type="Order",
            aggregate_id=str(uuid.uuid4()),
            aggregate_version=7,
            headers={"correlation_id": "c-1", "traceparent": "00-" + "1" * 32 + "-" + "2" * 16},
        ),
        Envelope.new("Shop:Nothing", "{}", headers={"dddframe-undecodable": "bad row"}),
    ]


@pytest.mark.parametrize("extra", [{}, {POSITION: 12345}, {POSITION: 2**40}])
def test_relay_properties_are_what_to_message_sends(extra: dict[str, Any]) -> None:
    for env in _envelopes():
        body = env.payload_json.encode()
        ours = ContentHeader(0, len(body), to_properties(env, **extra)).marshal()
        pika = ContentHeader(0, len(body), to_message(env, **extra).properties).marshal()
        assert ours == pika
        assert to_message(env, **extra).body == body
