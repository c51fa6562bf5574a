"""``module.projection(...)`` as recorded, and its check at start-up: every event name known,
every handler an ``async def method(self, event, view)`` of the class, with close-match
("did you mean") suggestions for misspelt names."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dddframe.bus.listener import ListenerTarget
from dddframe.bus.retry import RetryPolicy
from dddframe.bus.subscription import DeadLetterPolicy
from dddframe.domain.envelope import Envelope
from dddframe.domain.events import DomainEvent, EventRegistry
from dddframe.domain.limits import check_name
from dddframe.errors import ConfigurationError, close_matches
from dddframe.projections.projection import Projection, ProjectionView

__all__ = ["ProjectionBinding", "resolve_handlers"]


@dataclass(frozen=True, slots=True)
class ProjectionBinding:
    """``module.projection(cls, listen={event_name: method_name})`` as recorded."""

    module: str
    projection: type[Projection]
    listen: tuple[tuple[str, str], ...]
    group: str
    retry: RetryPolicy | None = None
    dead_letter: DeadLetterPolicy | None = None

    @classmethod
    def create(
        cls,
        module: str,
        projection: object,
        listen: object,
        *,
        group: str,
        retry: RetryPolicy | None,
        dead_letter: DeadLetterPolicy | None,
    ) -> ProjectionBinding:
        """Check the arguments' shape (names are resolved at start-up)."""
        where = f"module {module!r}: projection({getattr(projection, '__name__', projection)!r})"
        if not (isinstance(projection, type) and issubclass(projection, Projection)):
            raise ConfigurationError(
                f"{where}: the first argument must be a dddframe.Projection subclass"
            )
        projection.check()
        if not isinstance(listen, Mapping) or not listen:
            raise ConfigurationError(
                f"{where}: listen must map event names to handler method names, e.g. "
                "listen={'Order:Placed': 'on_placed'}"
            )
        pairs: list[tuple[str, str]] = []
        for event_name, method in listen.items():
            if not isinstance(event_name, str) or not event_name:
                raise ConfigurationError(f"{where}: event name {event_name!r} must be a str")
            check_name(event_name, "event name", where=where)
            if not isinstance(method, str) or not method.isidentifier():
                raise ConfigurationError(
                    f"{where}: the handler of {event_name!r} must be a method name (a str), "
                    f"not {method!r}"
                )
            pairs.append((event_name, method))
        if dead_letter not in (None, "block_aggregate", "continue"):
            raise ConfigurationError(
                f"{where}: dead_letter must be 'block_aggregate' or 'continue', not {dead_letter!r}"
            )
        return cls(module, projection, tuple(pairs), group, retry, dead_letter)


def resolve_handlers(
    binding: ProjectionBinding, registry: EventRegistry
) -> dict[str, ListenerTarget]:
    """Each bound event name's handler as a :class:`ListenerTarget` (``ctx_param`` unused), or a
    :class:`~dddframe.errors.ConfigurationError` saying what is wrong and what was meant."""
    cls = binding.projection
    handlers: dict[str, ListenerTarget] = {}
    for event_name, method_name in binding.listen:
        where = (
            f"module {binding.module!r}: projection({cls.__name__}, listen={{{event_name!r}: "
            f"{method_name!r}}})"
        )
        if not registry.is_known(event_name):
            raise ConfigurationError(
                f"{where}: no event is named {event_name!r}. Define a DomainEvent with that "
                f"__event_name__ or declare it with module.event({event_name!r})."
                + close_matches(event_name, registry.names())
            )
        method = getattr(cls, method_name, None)
        if method is None or not callable(method) or method_name.startswith("_"):
            public = [
                n
                for n in dir(cls)
                if not n.startswith("_")
                and callable(getattr(cls, n))
                and not hasattr(Projection, n)
            ]
            raise ConfigurationError(
                f"{where}: {cls.__name__} has no method {method_name!r}."
                + close_matches(method_name, public)
            )
        if not inspect.iscoroutinefunction(method):
            raise ConfigurationError(f"{where}: {cls.__name__}.{method_name} must be async def")
        params = list(inspect.signature(method).parameters)[1:]
        if len(params) != 2:
            raise ConfigurationError(
                f"{where}: {cls.__name__}.{method_name} must take (self, event, view), not "
                f"({', '.join(['self', *params])})"
            )
        handlers[event_name] = ListenerTarget(
            cls,
            method_name,
            params[0],
            _event_type(method, params[0], event_name, where, registry),
            None,
        )
    return handlers


def _event_type(
    method: Any, param: str, event_name: str, where: str, registry: EventRegistry
) -> Any:
    try:
        hints = typing.get_type_hints(method, localns={"ProjectionView": ProjectionView})
    except Exception as exc:
        raise ConfigurationError(f"{where}: cannot read annotations: {exc}") from exc
    annotation = hints.get(param)
    known = registry.lookup(event_name)
    if isinstance(annotation, type) and issubclass(annotation, DomainEvent):
        if known is None or not issubclass(known, annotation):
            raise ConfigurationError(
                f"{where}: the event parameter is annotated {annotation.__name__} (named "
                f"{annotation.event_name()!r}), which is not the class of {event_name!r}. Fix the "
                "annotation or the event name."
            )
        return known
    if annotation is None:
        return known if known is not None else dict
    if annotation is Envelope:
        return Envelope
    if annotation is dict or typing.get_origin(annotation) is dict:
        return dict
    raise ConfigurationError(
        f"{where}: annotate the event parameter with the event class, Envelope or dict"
    )
