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
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from dddframe.bus.codec import HEADER_PREFIX, envelope_from_headers, envelope_headers
from dddframe.bus.decision import keep_undecodable
from dddframe.domain.envelope import Envelope
from dddframe.errors import PoisonEvent

__all__ = [
    "HeaderCache",
    "Headers",
    "Record",
    "decode_headers",
    "encode_headers",
    "from_record",
    "record_size",
    "row_record",
    "sized_record",
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
    return sized_record(env)[0]


_EVENT_ID = HEADER_PREFIX + "event-id"
_NAME = HEADER_PREFIX + "name"
_AGGREGATE_TYPE = HEADER_PREFIX + "aggregate-type"
_AGGREGATE_ID = HEADER_PREFIX + "aggregate-id"
_AGGREGATE_VERSION = HEADER_PREFIX + "aggregate-version"
_EVENT_VERSION = HEADER_PREFIX + "event-version"
_OCCURRED_AT = HEADER_PREFIX + "occurred-at"
_FIXED_SIZE = _RECORD_OVERHEAD + len(_EVENT_ID) + len(_NAME) + len(_EVENT_VERSION)
_FIXED_SIZE += len(_OCCURRED_AT)


def sized_record(env: Envelope) -> tuple[Record, int]:
    """``to_record(env)`` and its ``record_size``, built in one pass (the relay's per-record
    work): the same headers in the same order as ``encode_headers(envelope_headers(env))``.

    >>> from dddframe.domain.envelope import Envelope
    >>> env = Envelope.new("Order:Placed", "{}", aggregate_id="7", headers={"x-é": "v"})
    >>> record, size = sized_record(env)
    >>> record == _general_record(env) and size == record_size(record)
    True
    """
    headers: Headers = []
    size = _FIXED_SIZE
    for k, v in env.headers.items():
        if k.startswith(HEADER_PREFIX):  # an envelope field replaces it in place: the general way
            record = _general_record(env)
            return record, record_size(record)
        b = v.encode()
        headers.append((k, b))
        size += len(k) + len(b) if k.isascii() else len(k.encode()) + len(b)
    b = str(env.event_id).encode()
    headers.append((_EVENT_ID, b))
    size += len(b)
    b = env.name.encode()
    headers.append((_NAME, b))
    size += len(b)
    if env.aggregate_type is not None:
        b = env.aggregate_type.encode()
        headers.append((_AGGREGATE_TYPE, b))
        size += len(_AGGREGATE_TYPE) + len(b)
    key = None
    if env.aggregate_id is not None:
        key = env.aggregate_id.encode()
        headers.append((_AGGREGATE_ID, key))
        size += len(_AGGREGATE_ID) + 2 * len(key)
    if env.aggregate_version is not None:
        b = str(env.aggregate_version).encode()
        headers.append((_AGGREGATE_VERSION, b))
        size += len(_AGGREGATE_VERSION) + len(b)
    b = str(env.event_version).encode()
    headers.append((_EVENT_VERSION, b))
    size += len(b)
    b = env.occurred_at.isoformat().encode()
    headers.append((_OCCURRED_AT, b))
    size += len(b)
    value = env.payload_json.encode()
    return (key, value, headers), size + len(value)


_is_canonical_uuid = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
).fullmatch  # the form str(uuid.UUID(...)) gives
_scan_json: Callable[[str, int], tuple[Any, int]] = vars(json.JSONDecoder())["scan_once"]
_NO_HEADERS: tuple[Headers, int] = ([], 0)
_UNSEEN: tuple[Headers, int] = ([], 0)
HeaderCache = dict[str, tuple[Headers, int] | None]
"""The last header cell's text -> its encoded headers and their size (None: the envelope's
way). Consecutive events of one command share their headers."""


def row_record(row: Sequence[Any], seen: HeaderCache) -> tuple[str, Record, int] | None:
    """The event name, record and ``record_size`` of an outbox row (cells in
    :data:`~dddframe.outbox.reader.ROW_FIELDS` order) built from its cells: the same record as
    ``sized_record(row_to_envelope(row))`` without the envelope. None for a row that needs the
    envelope's way: a cell :func:`~dddframe.outbox.records.row_to_envelope` would repair or
    report (an event id not in canonical form, headers that are not a JSON object of strings,
    a version that is not a number ...), or a header in the ``dddframe-`` namespace (routing,
    a reason it is undecodable). ``seen`` keeps the encoded headers of the last header text,
    so the headers consecutive events share (one command's correlation) are decoded once.

    >>> from datetime import datetime, UTC
    >>> from dddframe.outbox.records import row_to_envelope
    >>> row = (7, "0b7c7e0e-2b6f-4f5e-9d1a-3c2b1a0f9e8d", "Order:Placed", "Order", "1", 3, 1,
    ...        datetime(2026, 1, 1, tzinfo=UTC), "{}", '{"correlation_id": "c1"}')
    >>> fields = "position event_id name aggregate_type aggregate_id aggregate_version"
    >>> env = row_to_envelope(dict(zip((fields + " event_version occurred_at payload "
    ...                                 "headers").split(), row)))
    >>> row_record(row, {}) == ("Order:Placed", *sized_record(env))
    True
    >>> row_record(row[:9] + ('{"dddframe-cluster": "b"}',), {}) is None
    True
    """
    _, event_id, name, aggregate_type, aggregate_id, aggregate_version, event_version = row[:7]
    occurred, payload, cell = row[7:10]
    if (
        type(event_id) is not str
        or _is_canonical_uuid(event_id) is None
        or type(name) is not str
        or not name
        or type(payload) is not str
        or not isinstance(occurred, datetime)
        or (aggregate_type is not None and type(aggregate_type) is not str)
        or (aggregate_id is not None and type(aggregate_id) is not str)
        or (aggregate_version is not None and type(aggregate_version) is not int)
        or (event_version is not None and type(event_version) is not int)
    ):
        return None
    if cell is None or cell == "":
        headers, size = _NO_HEADERS
    elif type(cell) is str:
        found = seen.get(cell, _UNSEEN)
        if found is _UNSEEN:
            found = _cell_headers(cell, seen)
        if found is None:
            return None
        headers, size = found
    else:
        return None
    b = name.encode()
    headers = [*headers, (_EVENT_ID, event_id.encode()), (_NAME, b)]
    size += _FIXED_SIZE + 36 + len(b)
    if aggregate_type is not None:
        b = aggregate_type.encode()
        headers.append((_AGGREGATE_TYPE, b))
        size += len(_AGGREGATE_TYPE) + len(b)
    key = None
    if aggregate_id is not None:
        key = aggregate_id.encode()
        headers.append((_AGGREGATE_ID, key))
        size += len(_AGGREGATE_ID) + 2 * len(key)
    if aggregate_version is not None:
        b = str(aggregate_version).encode()
        headers.append((_AGGREGATE_VERSION, b))
        size += len(_AGGREGATE_VERSION) + len(b)
    if occurred.tzinfo is None:  # SQLite and MariaDB hand back naive UTC datetimes
        occurred = occurred.replace(tzinfo=UTC)
    b = occurred.isoformat().encode()
    if event_version is None or event_version == 1:
        headers += ((_EVENT_VERSION, b"1"), (_OCCURRED_AT, b))
        size += 1 + len(b)
    else:
        v = str(event_version or 1).encode()
        headers += ((_EVENT_VERSION, v), (_OCCURRED_AT, b))
        size += len(v) + len(b)
    value = payload.encode()
    return name, (key, value, headers), size + len(value)


def _cell_headers(cell: str, seen: HeaderCache) -> tuple[Headers, int] | None:
    """The encoded headers of a header cell and their size, remembered in ``seen``."""
    found: tuple[Headers, int] | None = None
    decoded = None
    if cell[0] == "{":  # the common case without json.loads' wrappers (the same scanner)
        try:
            decoded, end = _scan_json(cell, 0)
        except (StopIteration, ValueError):
            end = -1
        if end != len(cell):
            decoded = None
    if decoded is None:
        try:
            decoded = json.loads(cell)
        except ValueError:
            decoded = None
    if type(decoded) is dict:
        headers: Headers = []
        size = 0
        for k, v in decoded.items():
            if type(v) is not str or k.startswith(HEADER_PREFIX):
                break
            b = v.encode()
            headers.append((k, b))
            size += len(k) + len(b) if k.isascii() else len(k.encode()) + len(b)
        else:
            found = headers, size
    seen.clear()  # the last text only: a batch's cache holds no more than one row's headers
    seen[cell] = found
    return found


def _general_record(env: Envelope) -> Record:
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
