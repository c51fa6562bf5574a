"""Context carried across awaits: the current unit of work and the message headers."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dddframe.engine.unit_of_work import UnitOfWork

__all__ = ["current_headers", "current_unit_of_work"]

current_unit_of_work: ContextVar[UnitOfWork | None] = ContextVar(
    "dddframe_unit_of_work", default=None
)
# correlation_id / causation_id / traceparent of the message being handled, if any.
current_headers: ContextVar[dict[str, str] | None] = ContextVar("dddframe_headers", default=None)
