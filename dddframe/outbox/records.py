"""Envelope <-> outbox row mapping (the only place that knows the row layout)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, overload

from sqlalchemy import DateTime, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from dddframe.domain.envelope import Envelope
from dddframe.outbox.tables import OUTBOX_STATUS_READY

__all__ = [
    "ENVELOPE_COLUMNS",
    "UNDECODABLE",
    "TolerantTimestamp",
    "as_poison",
    "as_utc",
    "envelope_of",
    "envelope_to_row",
    "row_to_envelope",
]


def envelope_to_row(env: Envelope, *, status: int = OUTBOX_STATUS_READY) -> dict[str, Any]:
    return {
        "event_id": str(env.event_id),
        "name": env.name,
        "aggregate_type": env.aggregate_type,
        "aggregate_id": env.aggregate_id,
        "aggregate_version": env.aggregate_version,
        "event_version": env.event_version,
        "occurred_at": env.occurred_at,
        "payload": env.payload_json,
        "headers": json.dumps(env.headers, separators=(",", ":")),
        "status": status,
    }


def row_to_envelope(row: Mapping[Any, Any]) -> Envelope:
    """The envelope of an outbox row. Never raises for what a cell holds: a row that cannot be
    decoded (headers that are not a JSON object of strings, an event id that is not a UUID, a
    missing name ...) comes back with the reason in the :data:`UNDECODABLE` header, so that
    whoever delivers it dead-letters it with that reason instead of stopping on it.

    An event id that is not a UUID is replaced by one derived from the row's position and the
    stored text (the same on every read), so the dead letter can be listed and purged.

    >>> from datetime import datetime, UTC
    >>> row = {"position": 7, "event_id": "not-a-uuid", "name": "Order:Placed",
    ...        "aggregate_type": "Order", "aggregate_id": "1", "aggregate_version": 1,
    ...        "event_version": 1, "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
    ...        "payload": "{}", "headers": "{oops"}
    >>> for part in row_to_envelope(row).headers[UNDECODABLE].split("; "):
    ...     print(part[:60])
    outbox row at position 7 cannot be decoded: event_id 'not-a-
    headers are not JSON: Expecting property name enclosed in do
    >>> row_to_envelope(row).event_id == row_to_envelope(row).event_id
    True
    """
    problems: list[str] = []
    position = row["position"]
    raw_id = row["event_id"]
    try:
        event_id = raw_id if isinstance(raw_id, uuid.UUID) else uuid.UUID(str(raw_id))
    except ValueError:
        problems.append(f"event_id {_show(raw_id)} is not a UUID")
        event_id = uuid.uuid5(_UNDECODABLE_IDS, f"{position}:{raw_id!r}")
    headers = _headers(row["headers"], problems)
    name = row["name"]
    if not isinstance(name, str) or not name:
        problems.append(f"name {_show(name)} is not an event name")
        name = str(name or "")
    payload = row["payload"]
    if isinstance(payload, bytes):
        try:
            payload = payload.decode()
        except UnicodeDecodeError:
            problems.append("payload is not UTF-8 text")
            payload = payload.decode(errors="replace")
    if not isinstance(payload, str):
        problems.append(f"payload {_show(payload)} is not JSON text")
        payload = "null"
    occurred = row["occurred_at"]
    if not isinstance(occurred, datetime):
        problems.append(f"occurred_at {_show(occurred)} is not a timestamp")
        occurred = datetime.fromtimestamp(0, UTC)
    elif occurred.tzinfo is None:  # SQLite and MariaDB hand back naive UTC datetimes
        occurred = occurred.replace(tzinfo=UTC)
    aggregate_version = _int_or_none(row["aggregate_version"], "aggregate_version", problems)
    event_version = _int_or_none(row["event_version"], "event_version", problems) or 1
    if problems:
        reason = f"outbox row at position {position} cannot be decoded: " + "; ".join(problems)
        headers[UNDECODABLE] = reason[:_MAX_REASON]
    return Envelope(
        event_id=event_id,
        name=name,
        payload_json=payload,
        aggregate_type=_text_or_none(row["aggregate_type"]),
        aggregate_id=_text_or_none(row["aggregate_id"]),
        aggregate_version=aggregate_version,
        event_version=event_version,
        occurred_at=occurred,
        headers=headers,
        position=position,
    )


def envelope_of(
    position: Any,
    event_id: Any,
    name: Any,
    aggregate_type: Any,
    aggregate_id: Any,
    aggregate_version: Any,
    event_version: Any,
    occurred_at: Any,
    payload: Any,
    headers: Any,
) -> Envelope:
    """:func:`row_to_envelope` of an outbox row given as its cells, in the column order of
    the readers: the same envelope, built without the checks' detours when every cell has its
    usual type (the readers' hot path); any other row goes through :func:`row_to_envelope`.

    >>> from datetime import datetime, UTC
    >>> cells = (7, "01890a5d-ac96-774b-bcce-b302099a8057", "Order:Placed", "Order", "1", 1, 1,
    ...          datetime(2026, 1, 1, tzinfo=UTC), "{}", '{"correlation_id": "c"}')
    >>> envelope_of(*cells) == row_to_envelope(dict(zip(ENVELOPE_COLUMNS, cells)))
    True
    >>> envelope_of(*cells[:9], "{oops").headers[UNDECODABLE][:42]
    'outbox row at position 7 cannot be decoded'
    """
    decoded: Any = {}
    if (
        type(event_id) is str
        and type(name) is str
        and name
        and type(payload) is str
        and type(occurred_at) is datetime
        and type(event_version) is int
        and event_version
        and (aggregate_version is None or type(aggregate_version) is int)
        and (aggregate_type is None or type(aggregate_type) is str)
        and (aggregate_id is None or type(aggregate_id) is str)
        and (not headers or type(headers) is str)
    ):
        try:
            uid: uuid.UUID | None = uuid.UUID(event_id)
        except ValueError:
            uid = None
        if uid is None:
            decoded = None
        elif headers:
            try:
                decoded, end = _raw_decode(headers)
            except (ValueError, RecursionError):
                decoded = None
            else:
                if end != len(headers):  # text after the object: let the checks say so
                    decoded = None
        strings = type(decoded) is dict and all(type(v) is str for v in decoded.values())
        if uid is not None and strings:
            if occurred_at.tzinfo is None:  # SQLite and MariaDB hand back naive UTC datetimes
                occurred_at = occurred_at.replace(tzinfo=UTC)
            return Envelope(
                uid,
                name,
                payload,
                aggregate_type,
                aggregate_id,
                aggregate_version,
                event_version,
                occurred_at,
                decoded,
                position,
            )
    cells = (position, event_id, name, aggregate_type, aggregate_id, aggregate_version)
    rest = (event_version, occurred_at, payload, headers)
    return row_to_envelope(dict(zip(ENVELOPE_COLUMNS, cells + rest, strict=True)))


_raw_decode = json.JSONDecoder().raw_decode
ENVELOPE_COLUMNS = (
    "position",
    "event_id",
    "name",
    "aggregate_type",
    "aggregate_id",
    "aggregate_version",
    "event_version",
    "occurred_at",
    "payload",
    "headers",
)
"""The outbox columns :func:`envelope_of` takes, in its order."""


UNDECODABLE = "dddframe-undecodable"
"""The header a row that cannot be decoded carries: why. Such a row is poison on every
transport (:mod:`dddframe.bus.decision`); the header travels with it through the relays."""


def as_poison(env: Envelope, reason: str, *, payload: str | None = None) -> Envelope:
    """``env`` carrying ``reason`` in the :data:`UNDECODABLE` header (after any reason it had),
    and ``payload`` instead of its own when given: what a relay sends for an event the broker
    cannot take as it is, so every subscription of its name dead-letters it with the reason.

    >>> env = as_poison(Envelope.new("A:B", '{"big": 1}'), "too large", payload="")
    >>> env.headers[UNDECODABLE], env.payload_json
    ('too large', '')
    """
    earlier = env.headers.get(UNDECODABLE)
    text = f"{earlier}; {reason}" if earlier else reason
    return replace(
        env,
        headers={**env.headers, UNDECODABLE: text[:_MAX_REASON]},
        payload_json=env.payload_json if payload is None else payload,
    )


_UNDECODABLE_IDS = uuid.UUID("6f1c2a7e-3d1b-5c8e-9a40-2b7d0e5f4c11")
_MAX_REASON = 1000


def _show(value: object) -> str:
    """A short, printable rendering of a hostile cell (control characters escaped)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _headers(cell: object, problems: list[str]) -> dict[str, str]:
    if cell is None or cell == "":
        return {}
    if isinstance(cell, bytes):
        try:
            cell = cell.decode()
        except UnicodeDecodeError:
            problems.append("headers are not UTF-8 text")
            return {}
    try:
        decoded = json.loads(cell)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        problems.append(f"headers are not JSON: {str(exc)[:200]}")
        return {}
    except RecursionError:
        problems.append("headers are not JSON: nested too deeply")
        return {}
    if not isinstance(decoded, dict):
        problems.append(f"headers are a JSON {type(decoded).__name__}, not an object")
        return {}
    bad = [k for k, v in decoded.items() if not isinstance(v, str)]
    if bad:
        problems.append(f"header {_show(bad[0])} is not a string")
        return {}
    return decoded


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _int_or_none(value: object, column: str, problems: list[str]) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    try:
        return int(str(value))
    except ValueError:
        problems.append(f"{column} {_show(value)} is not a number")
        return None


class TolerantTimestamp(TypeDecorator[Any]):
    """How readers fetch ``occurred_at``: SQLite keeps timestamps as text, and SQLAlchemy's
    parser raises for text that is not one, failing the whole read. This type hands such a
    cell over as it is, so :func:`row_to_envelope` can report the row as undecodable. Other
    databases enforce the column type and read it as usual."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String())
        return dialect.type_descriptor(self.impl)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name == "sqlite" and isinstance(value, str):
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                return value
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(dt: datetime) -> datetime: ...
@overload
def as_utc(dt: datetime | None) -> datetime | None: ...
def as_utc(dt: datetime | None) -> datetime | None:
    """``dt`` with UTC as its zone when the driver handed it back naive (SQLite and MariaDB
    store UTC without a zone); None stays None.

    >>> as_utc(datetime(2026, 1, 1)).tzinfo is UTC, as_utc(None)
    (True, None)
    """
    if dt is None or dt.tzinfo is not None:
        return dt
    return dt.replace(tzinfo=UTC)
