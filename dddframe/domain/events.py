"""Domain events and the registry that maps event names to their classes.

A typed event is a frozen pydantic model. Its name is ``__event_name__`` or the class name, and its
schema version is ``__event_version__`` (default 1). Defining a class registers its name; two
different classes claiming one name is a :class:`~dddframe.errors.ConfigurationError` at import.

>>> class CartEmptied(DomainEvent):
...     __event_name__ = "Doc:CartEmptied"
...     cart_id: int
>>> CartEmptied.event_name(), CartEmptied.event_version()
('Doc:CartEmptied', 1)
>>> default_registry.lookup("Doc:CartEmptied") is CartEmptied
True
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from dddframe.domain.limits import check_name
from dddframe.errors import ConfigurationError, UnknownEventName, close_matches

__all__ = ["DomainEvent", "EventRegistry", "Upcaster", "default_registry"]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns the payload of version N of an event into the payload of version N + 1."""


class DomainEvent(BaseModel):
    """Base class of typed domain events: an immutable fact, validated by pydantic."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    __event_name__: ClassVar[str | None] = None
    __event_version__: ClassVar[int] = 1

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.__dict__.get("__abstract_event__", False):
            return
        default_registry.register(cls)

    @classmethod
    def event_name(cls) -> str:
        """The name this event travels under (``__event_name__`` or the class name)."""
        return cls.__dict__.get("__event_name__") or cls.__name__

    @classmethod
    def event_version(cls) -> int:
        """The schema version of this class; stored in every envelope."""
        return cls.__event_version__


def _class_key(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class EventRegistry:
    """Event name -> class, declared untyped names, and upcasters by (name, from_version).

    One process-wide registry (:data:`default_registry`) is filled as event classes are defined;
    ``Module.event()`` adds untyped names and ``Module.upcaster()`` adds upcasters.
    """

    def __init__(self) -> None:
        self._classes: dict[str, type[DomainEvent]] = {}
        self._untyped: set[str] = set()
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._lock = threading.Lock()

    def register(self, cls: type[DomainEvent]) -> None:
        name = check_name(
            cls.event_name(), "event name", where=f"{cls.__qualname__}.__event_name__"
        )
        with self._lock:
            existing = self._classes.get(name)
            if existing is not None and _class_key(existing) != _class_key(cls):
                raise ConfigurationError(
                    f"Event name {name!r} is claimed by both {_class_key(existing)} and "
                    f"{_class_key(cls)}. Give one of them a different __event_name__."
                )
            self._classes[name] = cls

    def declare(self, name: str) -> None:
        """Declare an untyped event or direct-message name (payload is a plain JSON object)."""
        check_name(name, "event name", where="module.event()")
        self._untyped.add(name)

    def add_upcaster(self, name: str, from_version: int, fn: Upcaster) -> None:
        key = (name, from_version)
        if key in self._upcasters and self._upcasters[key] is not fn:
            raise ConfigurationError(
                f"Two upcasters for {name!r} from version {from_version}; register only one."
            )
        self._upcasters[key] = fn

    def lookup(self, name: str) -> type[DomainEvent] | None:
        """The class registered for ``name``, or None for untyped names."""
        return self._classes.get(name)

    def is_known(self, name: str) -> bool:
        return name in self._classes or name in self._untyped

    def require(self, name: str) -> None:
        if not self.is_known(name):
            raise UnknownEventName(
                f"No event is named {name!r}: define a DomainEvent with that __event_name__ or "
                f"declare it with module.event({name!r})." + close_matches(name, self.names())
            )

    def names(self) -> Iterable[str]:
        return [*self._classes, *self._untyped]

    def upcast(self, name: str, version: int, payload: dict[str, Any]) -> dict[str, Any]:
        """Apply upcasters from ``version`` up to the current class version of ``name``."""
        cls = self._classes.get(name)
        target = cls.event_version() if cls is not None else version
        while version < target:
            fn = self._upcasters.get((name, version))
            if fn is None:
                raise UnknownEventName(
                    f"{name!r} payload is version {version} but the class is version {target} "
                    f"and no upcaster is registered: add module.upcaster({name!r}, "
                    f"from_version={version})."
                )
            payload = fn(dict(payload))
            version += 1
        return payload


default_registry = EventRegistry()
