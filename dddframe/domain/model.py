"""Entities and aggregates as SQLAlchemy 2.x declarative classes that record domain events.

An :class:`Aggregate` is the consistency boundary: it has an ``id`` (UUIDv7 unless redeclared) and a
``version`` that the unit of work checks and raises on every change (optimistic concurrency). An
:class:`Entity` lives inside an aggregate through a relationship; events it records belong to its
aggregate root.

>>> from sqlalchemy.orm import Mapped, mapped_column
>>> class Counter(Aggregate):
...     __tablename__ = "doc_counters"
...     value: Mapped[int] = mapped_column(default=0)
...     def add(self, n: int) -> None:
...         self.value += n
...         self.domain_event("Counter:Added", {"by": n})
>>> c = Counter(value=0)
>>> c.add(2)
>>> [(e.name, e.payload_json) for e in c.pending_events]
[('Counter:Added', '{"by":2}')]
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pydantic_core
from pydantic import BaseModel
from sqlalchemy import Integer, Numeric, String, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

from dddframe.domain.events import DomainEvent
from dddframe.domain.limits import AGGREGATE_TYPE_MAX, check_headers, check_name
from dddframe.errors import EventSerializationError, UsageError
from dddframe.ids import uuid7

__all__ = ["Aggregate", "Entity", "Model", "RecordedEvent"]

# One process-wide counter orders events recorded on a root and on its entities.
_recording_order = itertools.count()


@dataclass(slots=True)
class RecordedEvent:
    """An event recorded by a domain method and not yet committed."""

    name: str
    payload_json: str
    event_version: int
    headers: dict[str, str]
    order: int = field(default_factory=lambda: next(_recording_order))


def _serialize(name: str, payload: Any) -> str:
    try:
        if isinstance(payload, BaseModel):
            return payload.model_dump_json()
        return pydantic_core.to_json(dict(payload) if payload is not None else {}).decode()
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
        raise EventSerializationError(
            f"The payload of event {name!r} cannot be serialised to JSON ({exc}). Use JSON "
            "types, UUID, Decimal, datetime or a pydantic model for every field."
        ) from exc


class Model(DeclarativeBase):
    """The declarative base of every entity and aggregate; ``Model.metadata`` holds their tables.

    ``Mapped[str]`` becomes ``VARCHAR(255)`` and ``Mapped[Decimal]`` ``NUMERIC(18, 6)`` so the
    same models work on MariaDB/MySQL, which needs a length; use ``mapped_column(Text)``
    for longer text.
    """

    type_annotation_map = {str: String(255), Decimal: Numeric(18, 6)}


class _EventRecorder:
    """Records domain events on the instance until the unit of work commits them."""

    def _dddframe_events(self) -> list[RecordedEvent]:
        events: list[RecordedEvent] | None = self.__dict__.get("_dddframe_pending")
        if events is None:
            events = []
            # Bypass SQLAlchemy instrumentation: this is not a mapped attribute.
            object.__setattr__(self, "_dddframe_pending", events)
        return events

    def domain_event(
        self,
        event: DomainEvent | str,
        payload: Mapping[str, Any] | BaseModel | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Record an event; it is written to the outbox when the unit of work commits.

        Typed: ``self.domain_event(OrderPlaced(order_id=self.id))``. By name (freedom style):
        ``self.domain_event("Goods:Shopping", {"sku": "A1"}, headers={"x-action": "buy"})``.
        """
        if isinstance(event, DomainEvent):
            if payload is not None:
                raise UsageError("Pass either a DomainEvent or a name with a payload, not both")
            name, version = event.event_name(), event.event_version()
            body = _serialize(name, event)
        elif isinstance(event, str) and event:
            name, version = check_name(event, "event name", where="domain_event()"), 1
            body = _serialize(name, payload)
        else:
            raise UsageError(
                f"domain_event() takes a DomainEvent or a non-empty event name, got {event!r}"
            )
        checked = check_headers(headers, f"domain_event({name!r}, headers=...)")
        self._dddframe_events().append(RecordedEvent(name, body, version, checked))

    @property
    def pending_events(self) -> list[RecordedEvent]:
        """Events recorded since the last commit, in recording order (a copy)."""
        return list(self._dddframe_events())

    def _dddframe_clear_events(self) -> None:
        self._dddframe_events().clear()


class Entity(_EventRecorder, Model):
    """A child object of an aggregate. Declare its table and a relationship from the root."""

    __abstract__ = True


class Aggregate(_EventRecorder, Model):
    """An aggregate root: ``id`` (UUIDv7 by default) and ``version`` (optimistic concurrency).

    To use another id type, redeclare ``id`` in the subclass, e.g.
    ``id: Mapped[int] = mapped_column(primary_key=True)``.
    """

    __abstract__ = True

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        # The unit of work sets the version itself: one step per recorded event, so every
        # event of an aggregate gets its own sequence number.
        return {"version_id_col": cls.__table__.c.version, "version_id_generator": False}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if getattr(self, "id", None) is None:
            col = type(self).__table__.c.id
            if isinstance(col.type, Uuid):
                self.id = uuid7()
        if getattr(self, "version", None) is None:
            self.version = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("__abstract__", False):
            check_name(
                cls.aggregate_type(),
                "aggregate type",
                AGGREGATE_TYPE_MAX,
                where=f"{cls.__qualname__}.__aggregate_type__",
            )

    @classmethod
    def aggregate_type(cls) -> str:
        """The aggregate type name in envelopes (``__aggregate_type__`` or the class name)."""
        return str(cls.__dict__.get("__aggregate_type__") or cls.__name__)
