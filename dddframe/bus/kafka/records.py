"""Envelope <-> Kafka record: key = aggregate id, value = JSON payload, envelope in headers.

>>> from dddframe.domain.envelope import Envelope
>>> env = Envelope.new("Order:Placed", '{"n": 1}', aggregate_type="Order", aggregate_id="7",
...                    aggregate_version=3, headers={"correlation_id": "c1", "x-action": "buy"})
>>> key, value, headers = to_record(env)
>>> key, value
(b'7', b'{"n": 1}')
>>> back = from_record(headers, value)
>>> (back.event_id, back.aggregate_version, back.headers) == (env.event_id, 3, env.headers)
True
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from dddframe.bus.codec import envelope_from_headers, envelope_headers
from dddframe.bus.decision import keep_undecodable
from dddframe.domain.envelope import Envelope
from dddframe.errors import PoisonEvent

__all__ = [
    "Headers",
    "Record",
    "decode_headers",
    "encode_headers",
    "from_record",
    "record_size",
    "to_record",
]

Headers = list[tuple[str, bytes]]
Record = tuple[bytes | None, bytes, Headers]
"""(key, value, headers) of one record."""
_RECORD_OVERHEAD = 64  # batch and record framing, generously


def record_size(record: Record) -> int:
    """An upper bound of the bytes ``record`` takes in a produce request.

    >>> record_size((b"7", b"{}", [("h", b"v")]))
    69
    """
    key, value, headers = record
    size = _RECORD_OVERHEAD + len(key or b"") + len(value)
    return size + sum(len(k.encode()) + len(v) for k, v in headers)


def encode_headers(headers: dict[str, str]) -> Headers:
    return [(k, v.encode()) for k, v in headers.items()]


def decode_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Record headers as str -> str; raises PoisonEvent for headers that are not UTF-8."""
    out: dict[str, str] = {}
    for k, v in headers or ():
        try:
            out[k] = v.decode() if v is not None else ""
        except UnicodeDecodeError as exc:
            raise PoisonEvent(f"record header {k!r} is not UTF-8 text") from exc
    return out


def to_record(env: Envelope) -> Record:
    """(key, value, headers) of an envelope. Unkeyed direct messages have no key."""
    key = env.aggregate_id.encode() if env.aggregate_id is not None else None
    return key, env.payload_json.encode(), encode_headers(envelope_headers(env))


def from_record(
    headers: Sequence[tuple[str, bytes | None]] | None, value: bytes | None
) -> Envelope:
    """The envelope of a record; PoisonEvent says why a record is not one of ours.

    A value that is text but not JSON still makes an envelope, as an outbox row with such a
    payload does: a listener that decodes the payload finds it poison (and its aggregate waits
    behind it under ``block_aggregate``), one that takes the raw envelope gets it.
    """
    decoded = decode_headers(headers)
    if value is None:
        raise PoisonEvent("the record has no value (a tombstone), not a dddframe event")
    try:
        payload = value.decode()
    except UnicodeDecodeError as exc:
        raise PoisonEvent(f"the record value is not JSON text (not UTF-8): {exc}") from exc
    try:
        env = envelope_from_headers(decoded, payload)
    except PoisonEvent as missing:
        try:
            json.loads(payload)
        except ValueError as exc:  # not ours at all: say both
            raise PoisonEvent(f"the record value is not JSON ({exc}) and {missing}") from exc
        raise
    return keep_undecodable(env, decoded)
