"""The process manager model: an aggregate keyed by its correlation key, with durable timers.

A process manager is a SQLAlchemy model like an aggregate (``version`` is checked on every
step, so concurrent events for one instance are serialised), whose ``id`` is the correlation
key taken from the events it handles (``correlate_by``). Its steps are methods bound by event
name in ``module.process(...)``; a step changes the state, sends commands
(``ctx.send(...)``), sets timers (``self.timeout(...)``) and may end the process
(``self.complete()``).

>>> from sqlalchemy.orm import Mapped, mapped_column
>>> class Checkout(ProcessManager):
...     __tablename__ = "doc_checkouts"
...     attempts: Mapped[int] = mapped_column(default=0)
>>> c = Checkout(id="order-1")
>>> (c.id, c.attempts, c.is_completed, c.pending_timers)
('order-1', 0, False, {})
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from dddframe.domain.model import Aggregate
from dddframe.errors import UsageError
from dddframe.processes.context import active_step

__all__ = ["ProcessManager"]


class ProcessManager(Aggregate):
    """Base class of process managers (sagas). Declare ``__tablename__`` and the state columns.

    ``id`` is the correlation key (a str of up to 255 characters); ``completed`` is set by
    :meth:`complete`; ``timers`` maps each pending timer's name to its schedule id;
    ``held_by`` is set while a failed step holds the instance (the id of its event, or
    ``waiting:N`` for an entry waiting behind it; see :mod:`dddframe.processes.holds`).
    """

    __abstract__ = True

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # type: ignore[assignment]
    completed: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    timers: Mapped[dict[str, str]] = mapped_column(JSON, nullable=False, default=dict)
    held_by: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)

    def __init__(self, **kwargs: Any) -> None:
        # The framework creates instances (``cls(id=key)``) and the first step reads them at
        # once: give every column its scalar default now, not only at INSERT.
        for column in type(self).__table__.columns:
            default = column.default
            if column.key not in kwargs and default is not None and default.is_scalar:
                kwargs[column.key] = default.arg
        kwargs.setdefault("completed", False)
        kwargs.setdefault("timers", {})
        super().__init__(**kwargs)

    @property
    def is_completed(self) -> bool:
        return bool(self.completed)

    @property
    def is_held(self) -> bool:
        """Whether a failed step holds this instance (its later events and timers wait)."""
        return self.held_by is not None

    @property
    def pending_timers(self) -> dict[str, str]:
        """The timers set and not yet fired or cancelled: name -> schedule id (a copy)."""
        return dict(self.timers or {})

    def timeout(
        self, name: str, *, after: timedelta | None = None, at: datetime | None = None
    ) -> None:
        """Set the timer ``name`` (declared in ``module.process(..., timeouts=[name])``): at
        ``at`` or ``after`` from now the step bound to it (``on_<name>_timeout``) runs, unless
        it was cancelled or the process completed. Setting a pending timer again moves it.
        Only inside a step of this process."""
        active_step(self, "timeout").set_timer(self, name, at=at, after=after)

    def cancel_timeout(self, name: str) -> None:
        """Cancel the timer ``name`` if it is pending (nothing happens otherwise)."""
        active_step(self, "cancel_timeout").cancel_timer(self, name)

    def complete(self) -> None:
        """End the process: its pending timers are cancelled and later events for it are
        ignored (with a log line)."""
        if self.completed:
            return
        step = active_step(self, "complete")
        for name in list(self.timers or {}):
            step.cancel_timer(self, name)
        self.completed = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for reserved in ("timeout", "cancel_timeout", "complete"):
            if reserved in cls.__dict__:
                raise UsageError(
                    f"{cls.__qualname__} defines {reserved}(), which ProcessManager provides; "
                    "give your method another name."
                )
