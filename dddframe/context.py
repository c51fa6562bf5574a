"""Context carried across awaits: the headers of the message being handled (ground layer)."""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["current_headers"]

# correlation_id / causation_id / traceparent of the message being handled, if any.
current_headers: ContextVar[dict[str, str] | None] = ContextVar("dddframe_headers", default=None)
