"""Resolving listener bindings by name at start-up, with close-match suggestions."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing
from collections.abc import Sequence
from typing import Any

import injector as _injector

from dddframe.app.module import LISTEN_PARAMETERS, ListenerBinding, Module
from dddframe.bus.context import EventContext
from dddframe.bus.listener import ListenerTarget
from dddframe.bus.options import listener_options_of
from dddframe.domain.envelope import Envelope
from dddframe.domain.events import DomainEvent, EventRegistry
from dddframe.engine.handlers import can_provide
from dddframe.errors import ConfigurationError, MissingBinding, close_matches

__all__ = ["ControllerIndex", "listener_options", "resolve_target"]


class ControllerIndex:
    """Every controller the modules registered or that their packages define, by class name."""

    def __init__(self, modules: Sequence[Module]) -> None:
        self._by_module: dict[str, dict[str, type[Any]]] = {}
        self._all: dict[str, type[Any]] = {}
        for m in modules:
            found = dict(m.controllers)
            if m.package:
                for name, cls in _package_classes(m.package).items():
                    found.setdefault(name, cls)
            self._by_module[m.name] = found
            for name, cls in found.items():
                self._all.setdefault(name, cls)

    def find(self, module: str, name: str) -> type[Any] | None:
        return self._by_module.get(module, {}).get(name) or self._all.get(name)

    def names(self) -> list[str]:
        return list(self._all)


def _package_classes(package: str) -> dict[str, type[Any]]:
    try:
        pkg = importlib.import_module(package)
    except ImportError as exc:
        raise ConfigurationError(f"Module package {package!r} cannot be imported: {exc}") from exc
    modules = [pkg]
    if hasattr(pkg, "__path__"):
        for info in pkgutil.iter_modules(pkg.__path__, package + "."):
            modules.append(importlib.import_module(info.name))
    found: dict[str, type[Any]] = {}
    for mod in modules:
        for name, obj in vars(mod).items():
            if inspect.isclass(obj) and obj.__module__ == mod.__name__:
                found.setdefault(name, obj)
    return found


def resolve_target(
    target: str,
    *,
    module: str,
    event_name: str,
    controllers: ControllerIndex,
    registry: EventRegistry,
    container: _injector.Injector,
) -> ListenerTarget:
    """Turn ``"Controller.method"`` into a :class:`ListenerTarget`, or explain what is wrong."""
    where = f"module {module!r}: listen({event_name!r}, {target!r})"
    if not registry.is_known(event_name):
        _unknown_event(where, event_name, registry)
    cls_name, method_name = target.split(".", 1)
    cls = controllers.find(module, cls_name)
    if cls is None:
        raise ConfigurationError(
            f"{where}: no controller named {cls_name!r}. Register it with "
            f"module.controller({cls_name}) or give the module its package."
            + close_matches(cls_name, controllers.names())
        )
    method = getattr(cls, method_name, None)
    if method is None or not callable(method) or method_name.startswith("_"):
        public = [n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")]
        raise ConfigurationError(
            f"{where}: {cls_name} has no method {method_name!r}."
            + close_matches(method_name, public)
        )
    try:
        hints = typing.get_type_hints(method)
    except Exception as exc:
        raise ConfigurationError(f"{where}: cannot read annotations: {exc}") from exc
    event_param: str | None = None
    event_type: Any = None
    ctx_param: str | None = None
    for name, _p in list(inspect.signature(method).parameters.items())[1:]:
        ann = hints.get(name)
        if ann is EventContext:
            ctx_param = name
        elif event_param is None:
            event_param, event_type = name, ann
        else:
            raise ConfigurationError(
                f"{where}: {target} takes (event, ctx: EventContext) only; {name!r} is extra. "
                "Inject services through the controller's constructor."
            )
    cls_for_name = registry.lookup(event_name)
    if isinstance(event_type, type) and issubclass(event_type, DomainEvent):
        if cls_for_name is None or not issubclass(cls_for_name, event_type):
            raise ConfigurationError(
                f"{where}: the event parameter is annotated {event_type.__name__} "
                f"(named {event_type.event_name()!r}), which is not the class of "
                f"{event_name!r}. Fix the annotation or the event name."
            )
        event_type = cls_for_name
    elif event_type is None and cls_for_name is not None and event_param is not None:
        event_type = cls_for_name
    elif event_type not in (None, Envelope, dict) and not _is_dict(event_type):
        raise ConfigurationError(
            f"{where}: annotate the event parameter with the event class, Envelope or dict"
        )
    elif _is_dict(event_type):
        event_type = dict
    _check_constructor(cls, where, container)
    return ListenerTarget(cls, method_name, event_param, event_type, ctx_param)


def _is_dict(t: Any) -> bool:
    return t is dict or typing.get_origin(t) is dict


def _unknown_event(where: str, event_name: str, registry: EventRegistry) -> None:
    raise ConfigurationError(
        f"{where}: no event is named {event_name!r}. Define a DomainEvent with that "
        f"__event_name__ or declare it with module.event({event_name!r})."
        + close_matches(event_name, registry.names())
    )


def _check_constructor(cls: type[Any], where: str, container: _injector.Injector) -> None:
    try:
        bindings = _injector.get_bindings(cls.__init__)
    except Exception:
        return  # not an @inject constructor: nothing to check
    for name, dep in bindings.items():
        if not can_provide(container, dep):
            dep_name = getattr(dep, "__name__", repr(dep))
            raise MissingBinding(
                f"{where}: {cls.__name__}.__init__ needs {dep_name} for {name!r}, but nothing "
                f"provides it (abstract or not bound). Add module.bind({dep_name}, to=...)."
            )


def listener_options(bus: Any, binding: ListenerBinding) -> dict[str, object]:
    """The transport options of one ``listen()``, checked against the bus's declared type.

    Keywords are parsed into ``bus.listener_options`` (unknown names get close-match
    suggestions); a typed ``options=`` object must be of that type. Returns the options that
    were set, as the transport reads them from ``Subscription.options``.
    """
    expected = listener_options_of(bus)
    where = f"module {binding.module!r}: listen({binding.event_name!r}, {binding.target!r})"
    typed = binding.typed_options
    if typed is not None:
        if not isinstance(typed, expected):
            raise ConfigurationError(
                f"{where}: options={type(typed).__name__}(...) does not fit the "
                f"{getattr(bus, 'name', type(bus).__name__)!r} bus, which takes "
                f"{expected.__name__}."
            )
        return typed.given()
    return expected.parse(dict(binding.options), where=where, also=LISTEN_PARAMETERS).given()
