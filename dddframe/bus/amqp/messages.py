"""Envelope <-> AMQP message: the payload as the body, the envelope in headers."""

from __future__ import annotations

from typing import Any

import aio_pika

from dddframe.bus.codec import envelope_from_headers, envelope_headers
from dddframe.bus.decision import keep_undecodable
from dddframe.domain.envelope import Envelope
from dddframe.errors import PoisonEvent

__all__ = ["ATTEMPT", "REASON", "REPLAYED", "WAITING", "from_message", "to_message"]

ATTEMPT = "x-dddframe-attempt"  # failed attempts so far
REASON = "x-dddframe-reason"
WAITING = "x-dddframe-waiting"  # parked behind an earlier event of the same aggregate
REPLAYED = "x-dddframe-replayed"  # moved back from the dead-letter queue by an operator
_OURS = (
    ATTEMPT,
    REASON,
    WAITING,
    REPLAYED,
    "x-dddframe-dead-at",
    "x-dddframe-dead-id",
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
)


def to_message(envelope: Envelope, **extra_headers: Any) -> aio_pika.Message:
    headers: dict[str, Any] = dict(envelope_headers(envelope))
    headers.update(extra_headers)
    return aio_pika.Message(
        body=envelope.payload_json.encode(),
        headers=headers,
        message_id=str(envelope.event_id),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def from_message(message: aio_pika.abc.AbstractMessage) -> Envelope:
    """Decode a message; anything that is not our envelope raises PoisonEvent with the reason.

    A relayed outbox row that could not be decoded keeps its reason (the
    ``dddframe-undecodable`` header), so the consumer dead-letters it as poison."""
    headers = {k: _text(v) for k, v in (message.headers or {}).items() if k not in _OURS}
    try:
        body = message.body.decode()
    except UnicodeDecodeError as exc:
        raise PoisonEvent(f"body is not UTF-8 text: {exc}") from exc
    return keep_undecodable(envelope_from_headers(headers, body), headers)


def header_int(message: aio_pika.abc.AbstractMessage, name: str) -> int:
    value = (message.headers or {}).get(name)
    try:
        return int(_text(value)) if value is not None else 0
    except ValueError:
        return 0
