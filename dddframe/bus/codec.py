"""The envelope codec: one wire form of an envelope for every transport and store.

>>> from dddframe.domain.envelope import Envelope
>>> env = Envelope.new("Order:Placed", '{"n":1}', aggregate_type="Order", aggregate_id="7",
...                    aggregate_version=2, headers={"correlation_id": "c1"})
>>> decode_envelope(encode_envelope(env)) == env
True
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from dddframe.domain.envelope import Envelope
from dddframe.errors import PoisonEvent

__all__ = [
    "HEADER_PREFIX",
    "decode_envelope",
    "encode_envelope",
    "envelope_from_headers",
    "envelope_headers",
]

HEADER_PREFIX = "dddframe-"


def encode_envelope(env: Envelope) -> str:
    return json.dumps(
        {
            "event_id": str(env.event_id),
            "name": env.name,
            "aggregate_type": env.aggregate_type,
            "aggregate_id": env.aggregate_id,
            "aggregate_version": env.aggregate_version,
            "event_version": env.event_version,
            "occurred_at": env.occurred_at.isoformat(),
            "headers": env.headers,
            "position": env.position,
            "payload": env.payload_json,
        },
        separators=(",", ":"),
    )


def decode_envelope(text: str | bytes) -> Envelope:
    """Decode :func:`encode_envelope` output; anything else raises PoisonEvent with the reason."""
    try:
        d = json.loads(text)
        return Envelope(
            event_id=uuid.UUID(d["event_id"]),
            name=str(d["name"]),
            payload_json=str(d["payload"]),
            aggregate_type=d.get("aggregate_type"),
            aggregate_id=d.get("aggregate_id"),
            aggregate_version=d.get("aggregate_version"),
            event_version=int(d.get("event_version", 1)),
            occurred_at=datetime.fromisoformat(d["occurred_at"]),
            headers={str(k): str(v) for k, v in (d.get("headers") or {}).items()},
            position=d.get("position"),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PoisonEvent(f"not a dddframe envelope: {exc!r}") from exc
    except RecursionError as exc:
        raise PoisonEvent("not a dddframe envelope: JSON nested too deeply") from exc


def envelope_headers(env: Envelope) -> dict[str, str]:
    """The envelope as flat string headers (Kafka record headers, AMQP headers): the envelope
    fields under ``dddframe-*`` and the user/trace headers as they are."""
    out = dict(env.headers)
    fields: dict[str, Any] = {
        "event-id": str(env.event_id),
        "name": env.name,
        "aggregate-type": env.aggregate_type,
        "aggregate-id": env.aggregate_id,
        "aggregate-version": env.aggregate_version,
        "event-version": env.event_version,
        "occurred-at": env.occurred_at.isoformat(),
    }
    for k, v in fields.items():
        if v is not None:
            out[HEADER_PREFIX + k] = str(v)
    return out


def envelope_from_headers(headers: dict[str, str], payload: str) -> Envelope:
    """Inverse of :func:`envelope_headers`; raises PoisonEvent when required fields are missing."""
    h = dict(headers)
    try:
        event_id = uuid.UUID(h.pop(HEADER_PREFIX + "event-id"))
        name = h.pop(HEADER_PREFIX + "name")
        occurred = datetime.fromisoformat(h.pop(HEADER_PREFIX + "occurred-at"))
        version = h.pop(HEADER_PREFIX + "aggregate-version", None)
        return Envelope(
            event_id=event_id,
            name=name,
            payload_json=payload,
            aggregate_type=h.pop(HEADER_PREFIX + "aggregate-type", None),
            aggregate_id=h.pop(HEADER_PREFIX + "aggregate-id", None),
            aggregate_version=int(version) if version is not None else None,
            event_version=int(h.pop(HEADER_PREFIX + "event-version", "1")),
            occurred_at=occurred,
            headers={k: v for k, v in h.items() if not k.startswith(HEADER_PREFIX)},
        )
    except (KeyError, ValueError) as exc:
        raise PoisonEvent(f"missing or malformed envelope header: {exc!r}") from exc
