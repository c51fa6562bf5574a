"""Envelope <-> AMQP message: the payload as the body, the envelope in headers."""

from __future__ import annotations

import math
from typing import Any

import aio_pika
import aiormq

from dddframe.bus.codec import envelope_from_headers, envelope_headers
from dddframe.bus.decision import keep_undecodable
from dddframe.domain.envelope import Envelope
from dddframe.errors import PoisonEvent

__all__ = [
    "ATTEMPT",
    "POSITION",
    "REASON",
    "REPLAYED",
    "WAITING",
    "from_message",
    "header_float",
    "header_int",
    "header_text",
    "to_message",
    "to_properties",
]

ATTEMPT = "x-dddframe-attempt"  # failed attempts so far
REASON = "x-dddframe-reason"
WAITING = "x-dddframe-waiting"  # parked behind an earlier event of the same aggregate
REPLAYED = "x-dddframe-replayed"  # moved back from the dead-letter queue by an operator
POSITION = "x-dddframe-position"  # the outbox position the relay published it from
_OURS = (
    ATTEMPT,
    REASON,
    WAITING,
    REPLAYED,
    POSITION,
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
    """The envelope as a persistent JSON message: the payload as its body, the envelope's
    fields and headers (and ``extra_headers``) as its headers, the event id as its id."""
    headers: dict[str, Any] = dict(envelope_headers(envelope))
    headers.update(extra_headers)
    return aio_pika.Message(
        body=envelope.payload_json.encode(),
        headers=headers,
        message_id=str(envelope.event_id),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def to_properties(envelope: Envelope, **extra_headers: Any) -> aiormq.spec.Basic.Properties:
    """The properties :func:`to_message` gives the message, built without the message: the
    relay publishes ``envelope.payload_json.encode()`` with them through aiormq directly.
    Field for field what ``to_message(...).properties`` holds (aio-pika sets ``priority`` 0),
    so the content header on the wire is the same."""
    headers: dict[str, Any] = envelope_headers(envelope)
    headers.update(extra_headers)
    return aiormq.spec.Basic.Properties(
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=headers,
        message_id=str(envelope.event_id),
        priority=0,
    )


def header_text(value: Any) -> str:
    """A header value as text for display: bytes that are not UTF-8 show replacement characters.

    >>> header_text(bytearray(b"caf\\xc3\\xa9")), header_text(b"\\xff"), header_text(3)
    ('café', '\ufffd', '3')
    """
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode(errors="replace")
    return "" if value is None else str(value)


def _strict_headers(message: aio_pika.abc.AbstractMessage) -> dict[str, str]:
    """The message's own headers as str -> str; PoisonEvent for a value that is not UTF-8."""
    out: dict[str, str] = {}
    for key, value in (message.headers or {}).items():
        if key in _OURS:
            continue
        if isinstance(value, bytes | bytearray):
            try:
                out[key] = bytes(value).decode()
            except UnicodeDecodeError as exc:
                raise PoisonEvent(f"message header {key!r} is not UTF-8 text") from exc
        else:
            out[key] = str(value)
    return out


def from_message(message: aio_pika.abc.AbstractMessage) -> Envelope:
    """Decode a message; anything that is not our envelope raises PoisonEvent with the reason.

    A header that is not UTF-8 text is poison, as on Kafka. A relayed outbox row that could
    not be decoded keeps its reason (the ``dddframe-undecodable`` header), so the consumer
    dead-letters it as poison."""
    headers = _strict_headers(message)
    try:
        body = message.body.decode()
    except UnicodeDecodeError as exc:
        raise PoisonEvent(f"body is not UTF-8 text: {exc}") from exc
    return keep_undecodable(envelope_from_headers(headers, body), headers)


def header_int(message: aio_pika.abc.AbstractMessage, name: str) -> int:
    """One of our integer headers; 0 when it is missing or not an integer (stored data lies)."""
    value = (message.headers or {}).get(name)
    try:
        return int(header_text(value)) if value is not None else 0
    except ValueError:
        return 0


def header_float(message: aio_pika.abc.AbstractMessage, name: str) -> float:
    """One of our numeric headers; 0.0 when it is missing or not a finite number."""
    try:
        number = float(header_text((message.headers or {}).get(name)) or 0)
    except ValueError:
        return 0.0
    return number if math.isfinite(number) else 0.0
