"""Envelope <-> outbox row mapping (the only place that knows the row layout)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from dddframe.domain.envelope import Envelope
from dddframe.outbox.tables import OUTBOX_STATUS_READY

__all__ = ["envelope_to_row", "row_to_envelope"]


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
    occurred = row["occurred_at"]
    if occurred.tzinfo is None:  # SQLite and MariaDB hand back naive UTC datetimes
        occurred = occurred.replace(tzinfo=UTC)
    return Envelope(
        event_id=uuid.UUID(row["event_id"]),
        name=row["name"],
        payload_json=row["payload"],
        aggregate_type=row["aggregate_type"],
        aggregate_id=row["aggregate_id"],
        aggregate_version=row["aggregate_version"],
        event_version=row["event_version"],
        occurred_at=occurred,
        headers=json.loads(row["headers"]) if row["headers"] else {},
        position=row["position"],
    )


def utcnow() -> datetime:
    return datetime.now(UTC)
