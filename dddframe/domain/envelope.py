"""The envelope: one shape for an event on every transport.

>>> env = Envelope.new("Order:Placed", '{"total": "9.50"}', aggregate_type="Order",
...                    aggregate_id="42", aggregate_version=3)
>>> env.sequence, env.payload()
(3, {'total': '9.50'})
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from dddframe.domain.limits import AGGREGATE_TYPE_MAX, check_headers, check_key, check_name
from dddframe.ids import uuid7

__all__ = ["CAUSATION_ID", "CORRELATION_ID", "TRACEPARENT", "Envelope"]

CORRELATION_ID = "correlation_id"
CAUSATION_ID = "causation_id"
TRACEPARENT = "traceparent"


@dataclass(frozen=True, slots=True)
class Envelope:
    """An event (or direct message) with its identity, origin and metadata.

    ``payload_json`` is the JSON text of the payload. ``position`` is the outbox position when the
    envelope was read from a database (None elsewhere).
    """

    event_id: uuid.UUID
    name: str
    payload_json: str
    aggregate_type: str | None = None
    aggregate_id: str | None = None
    aggregate_version: int | None = None
    event_version: int = 1
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    headers: dict[str, str] = field(default_factory=dict)
    position: int | None = None

    @classmethod
    def new(
        cls,
        name: str,
        payload_json: str,
        *,
        aggregate_type: str | None = None,
        aggregate_id: str | None = None,
        aggregate_version: int | None = None,
        event_version: int = 1,
        headers: dict[str, str] | None = None,
    ) -> Envelope:
        """A new envelope to be written; checks that the name, the aggregate (or key) and the
        headers fit the outbox columns (:mod:`dddframe.domain.limits`)."""
        where = f"event {name!r}" if isinstance(name, str) and len(name) < 80 else "an event"
        check_name(name, "event name", where=where)
        if aggregate_type is not None:
            check_name(aggregate_type, "aggregate type", AGGREGATE_TYPE_MAX, where=where)
        if aggregate_id is not None:
            check_key(aggregate_id, where, aggregate_type=aggregate_type or "", what="aggregate id")
        return cls(
            event_id=uuid7(),
            name=name,
            payload_json=payload_json,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            aggregate_version=aggregate_version,
            event_version=event_version,
            headers=check_headers(headers, f"the headers of {where}"),
        )

    @property
    def sequence(self) -> int | None:
        """The per-aggregate sequence number (the aggregate version this event produced)."""
        return self.aggregate_version

    @property
    def correlation_id(self) -> str | None:
        return self.headers.get(CORRELATION_ID)

    @property
    def causation_id(self) -> str | None:
        return self.headers.get(CAUSATION_ID)

    @property
    def ordering_key(self) -> str:
        """What order is kept by: the aggregate, or the event itself for unkeyed messages."""
        if self.aggregate_id is None:
            return str(self.event_id)
        return f"{self.aggregate_type}:{self.aggregate_id}"

    def payload(self) -> Any:
        """The decoded JSON payload."""
        return json.loads(self.payload_json)

    def with_position(self, position: int) -> Envelope:
        return replace(self, position=position)
