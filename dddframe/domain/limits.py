"""What fits: the length limits of names, keys and headers, and the one header check.

The outbox columns (``dddframe.outbox.tables``) are declared with these lengths, and the
brokers' own limits are here too, so a name that cannot be stored or sent is refused where it
is declared (a :class:`~dddframe.errors.ConfigurationError` naming the limit), and a key,
aggregate id or header given at run time is refused before anything is written.

>>> check_name("Order:Placed", "event name")
'Order:Placed'
>>> check_name("x" * 300, "event name")
Traceback (most recent call last):
...
dddframe.errors.ConfigurationError: The event name 'xxx...' is 300 characters long; ... 255 ...
>>> check_headers({"x-action": "buy"}, "publish(headers=...)")
{'x-action': 'buy'}
>>> check_headers({"retries": 3}, "publish(headers=...)")
Traceback (most recent call last):
...
dddframe.errors.InvalidHeader: publish(headers=...): header 'retries' has the value 3 of type ...
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from dddframe.errors import ConfigurationError, InvalidHeader, LimitExceeded

__all__ = [
    "AGGREGATE_ID_MAX",
    "AGGREGATE_TYPE_MAX",
    "AMQP_NAME_MAX_BYTES",
    "EVENT_ID_MAX",
    "HEADERS_MAX_BYTES",
    "HEADER_KEY_MAX_BYTES",
    "INBOX_MESSAGE_ID_MAX",
    "KAFKA_TOPIC_MAX",
    "MESSAGE_KEY_TYPE",
    "NAME_MAX",
    "ORDERING_KEY_MAX",
    "SUBSCRIPTION_MAX",
    "check_bytes",
    "check_headers",
    "check_key",
    "check_name",
]

# -- the outbox columns (dddframe.outbox.tables declares its columns with these) ---------------
NAME_MAX = 255
"""Characters in an event or direct-message name (``dddframe_outbox.name``)."""
AGGREGATE_TYPE_MAX = 255
"""Characters in an aggregate type (``dddframe_outbox.aggregate_type``)."""
AGGREGATE_ID_MAX = 255
"""Characters in an aggregate id or a message key (``dddframe_outbox.aggregate_id``)."""
ORDERING_KEY_MAX = 255
"""Characters in ``<aggregate type>:<aggregate id>``, what dead letters are kept by."""
SUBSCRIPTION_MAX = 255
"""Characters in a subscription name ``<group>.<Controller.method>`` (positions, inbox)."""
EVENT_ID_MAX = 36
"""A UUID's text."""
INBOX_MESSAGE_ID_MAX = 80
"""Characters in an inbox message id (``<event id>:<n>``)."""
HEADERS_MAX_BYTES = 65_535
"""The headers of one message as stored (compact JSON): a TEXT column, 64 KiB on MariaDB."""

# -- the brokers ----------------------------------------------------------------------------
HEADER_KEY_MAX_BYTES = 255
"""UTF-8 bytes in one header name (an AMQP short string)."""
KAFKA_TOPIC_MAX = 249
"""Characters in a Kafka topic name (letters, digits, '.', '_' and '-' only)."""
AMQP_NAME_MAX_BYTES = 255
"""UTF-8 bytes in an AMQP exchange name, queue name or routing key (short strings)."""

MESSAGE_KEY_TYPE = "message"
"""The aggregate type of a keyed direct message."""


def _shown(value: str) -> str:
    return repr(value if len(value) <= 32 else value[:32] + "...")


def _utf8_size(value: str, what: str, error: type[Exception], where: str = "") -> int:
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        prefix = f"{where}: " if where else ""
        raise error(
            f"{prefix}The {what} {_shown(value)} is not valid text (a lone surrogate at "
            f"{exc.start}); use characters that UTF-8 can encode."
        ) from None


def check_name(
    name: object,
    what: str,
    limit: int = NAME_MAX,
    *,
    where: str = "",
    error: type[Exception] = ConfigurationError,
    source: str = "the outbox column",
) -> str:
    """``name`` if it is a non-empty str of at most ``limit`` characters, else ``error``.

    ``source`` says where the limit comes from (the outbox column, the broker).
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(name, str) or not name:
        raise error(f"{prefix}The {what} must be a non-empty str, not {_shown_value(name)}.")
    _utf8_size(name, what, error, where)
    if len(name) > limit:
        raise error(
            f"{prefix}The {what} {_shown(name)} is {len(name)} characters long; the limit is "
            f"{limit} ({source}). "
            f"Use a shorter {what.split()[-1]}."
        )
    return name


def check_bytes(name: str, what: str, limit: int = AMQP_NAME_MAX_BYTES, *, where: str = "") -> str:
    """``name`` if its UTF-8 form has at most ``limit`` bytes (AMQP short strings)."""
    size = _utf8_size(name, what, ConfigurationError, where)
    if size > limit:
        prefix = f"{where}: " if where else ""
        raise ConfigurationError(
            f"{prefix}The {what} {_shown(name)} is {size} bytes in UTF-8; the broker allows "
            f"{limit}. Use a shorter {what.split()[-1]}."
        )
    return name


def check_key(
    key: object, where: str, *, aggregate_type: str = MESSAGE_KEY_TYPE, what: str = "key"
) -> str | None:
    """A message key or aggregate id: None, or a non-empty str that fits the ordering key
    ``<aggregate type>:<key>``; else :class:`~dddframe.errors.LimitExceeded`."""
    if key is None:
        return None
    if not isinstance(key, str) or not key:
        raise LimitExceeded(f"{where}: the {what} must be a non-empty str or None, not {key!r}.")
    limit = min(AGGREGATE_ID_MAX, ORDERING_KEY_MAX - len(aggregate_type) - 1)
    _utf8_size(key, what, LimitExceeded, where)
    if len(key) > limit:
        raise LimitExceeded(
            f"{where}: the {what} {_shown(key)} is {len(key)} characters long; with the "
            f"{aggregate_type!r} prefix the limit is {limit} (the outbox column). Use a shorter "
            f"{what}, e.g. a hash of it."
        )
    return key


def check_headers(headers: object, where: str) -> dict[str, str]:
    """The one header check: a mapping of non-empty str names to str values, that fits.

    Returns a copy as a plain dict; raises :class:`~dddframe.errors.InvalidHeader` naming the
    header and ``where`` (the entry point, e.g. ``engine.run(headers=...)``).
    """
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise InvalidHeader(
            f"{where}: headers must be a mapping of str to str, not {type(headers).__name__}."
        )
    out: dict[str, str] = {}
    for k, v in headers.items():
        if not isinstance(k, str) or not k:
            raise InvalidHeader(
                f"{where}: header names must be non-empty str, not {k!r} "
                f"({type(k).__name__}). Use a name such as 'x-tenant'."
            )
        if _utf8_size(k, "header name", InvalidHeader, where) > HEADER_KEY_MAX_BYTES:
            raise InvalidHeader(
                f"{where}: the header name {_shown(k)} is longer than {HEADER_KEY_MAX_BYTES} "
                "bytes. Use a shorter name."
            )
        if not isinstance(v, str):
            raise InvalidHeader(
                f"{where}: header {k!r} has the value {_shown_value(v)} of type "
                f"{type(v).__name__}; header values must be str. Convert it with str() first."
            )
        _utf8_size(v, f"value of header {k!r}", InvalidHeader, where)
        out[k] = v
    size = len(json.dumps(out, separators=(",", ":")))
    if size > HEADERS_MAX_BYTES:
        raise InvalidHeader(
            f"{where}: the headers take {size} bytes as stored; the limit is "
            f"{HEADERS_MAX_BYTES} (the outbox column). Put large data in the payload."
        )
    return out


def _shown_value(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 40 else text[:40] + "..."
