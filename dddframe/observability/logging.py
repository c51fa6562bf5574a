"""Structured logging: every record carries ``event_id`` and ``correlation_id``.

While a listener runs (and while the runner logs about its delivery) the ids are those of the
event being delivered; while a command runs, the correlation id of its headers. Elsewhere they
are ``"-"``. Attach :class:`DeliveryContextFilter` to your handlers, or call
:func:`configure_logging` once at start-up:

>>> import logging, io
>>> stream = io.StringIO()
>>> handler = configure_logging(stream=stream, json_lines=True)
>>> logging.getLogger("shop").warning("hello")
>>> '"correlation_id": "-"' in stream.getvalue()
True
>>> logging.getLogger().removeHandler(handler)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Any

from dddframe.context import current_headers
from dddframe.domain.envelope import CORRELATION_ID, Envelope

__all__ = [
    "DEFAULT_FORMAT",
    "DeliveryContextFilter",
    "JsonFormatter",
    "configure_logging",
    "current_delivery",
    "delivery_context",
]

current_delivery: ContextVar[tuple[Envelope, str] | None] = ContextVar(
    "dddframe_current_delivery", default=None
)
"""The envelope being delivered and the subscription name, while a listener runs."""

DEFAULT_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [event_id=%(event_id)s "
    "correlation_id=%(correlation_id)s] %(message)s"
)


@contextmanager
def delivery_context(envelope: Envelope, subscription: str) -> Iterator[None]:
    """Mark the current task as delivering ``envelope`` (log records pick the ids up)."""
    token = current_delivery.set((envelope, subscription))
    try:
        yield
    finally:
        current_delivery.reset(token)


class DeliveryContextFilter(logging.Filter):
    """Adds ``event_id``, ``correlation_id`` and ``subscription`` to every record that does not
    carry them yet (``extra=`` wins), so format strings may always name them."""

    def filter(self, record: logging.LogRecord) -> bool:
        delivery = current_delivery.get()
        if delivery is not None:
            env, sub = delivery
            event_id, correlation, subscription = str(env.event_id), env.correlation_id, sub
        else:
            headers = current_headers.get() or {}
            event_id, correlation, subscription = "-", headers.get(CORRELATION_ID), "-"
        if not hasattr(record, "event_id"):
            record.event_id = event_id
        if not hasattr(record, "correlation_id") or record.correlation_id is None:
            record.correlation_id = correlation or "-"
        if not hasattr(record, "subscription"):
            record.subscription = subscription
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, ids and any exception."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "event_id": getattr(record, "event_id", "-"),
            "correlation_id": getattr(record, "correlation_id", "-"),
            "subscription": getattr(record, "subscription", "-"),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure_logging(
    level: int | str = logging.INFO,
    *,
    json_lines: bool = False,
    stream: IO[str] | None = None,
    fmt: str = DEFAULT_FORMAT,
) -> logging.Handler:
    """Add a handler with the ids to the root logger and return it.

    ``json_lines=True`` writes one JSON object per line (for log shippers); otherwise
    ``fmt`` (default :data:`DEFAULT_FORMAT`) is used.
    """
    handler = logging.StreamHandler(stream)
    handler.addFilter(DeliveryContextFilter())
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(fmt))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler
