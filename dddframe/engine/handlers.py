"""Command handlers and how their parameters are resolved from their annotations."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import injector as _injector

from dddframe.domain.model import Aggregate
from dddframe.engine.command import Command
from dddframe.engine.repository import Repository
from dddframe.engine.unit_of_work import UnitOfWork
from dddframe.errors import ConfigurationError, MissingBinding

__all__ = ["CommandHandler", "Param", "resolve_params"]


@dataclass(frozen=True, slots=True)
class Param:
    """How one parameter is filled: ``command``, ``repository`` (of ``type``), ``uow``,
    ``context`` or ``service`` (from the injector)."""

    name: str
    kind: str
    type: Any


def resolve_params(
    fn: Callable[..., Any], *, special: dict[type[Any], str], owner: str
) -> list[Param]:
    """Read ``fn``'s annotations into a list of :class:`Param`.

    ``special`` maps base classes to parameter kinds (e.g. ``{Command: "command"}``).
    """
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise ConfigurationError(
            f"Cannot read the annotations of {owner}: {exc}. Import the annotated types at "
            "module level."
        ) from exc
    params: list[Param] = []
    for name, p in inspect.signature(fn).parameters.items():
        if name == "self":
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = hints.get(name)
        if ann is None:
            raise ConfigurationError(
                f"Parameter {name!r} of {owner} has no annotation; annotate it so dddframe "
                "knows what to pass (a command, Repository[T], UnitOfWork or a service type)."
            )
        origin = typing.get_origin(ann)
        if origin is Repository:
            (target,) = typing.get_args(ann)
            if not (isinstance(target, type) and issubclass(target, Aggregate)):
                raise ConfigurationError(f"{owner}: Repository[...] needs an Aggregate subclass")
            params.append(Param(name, "repository", target))
            continue
        if ann is UnitOfWork:
            params.append(Param(name, "uow", ann))
            continue
        kind = next(
            (k for base, k in special.items() if isinstance(ann, type) and issubclass(ann, base)),
            None,
        )
        params.append(Param(name, kind or "service", ann))
    return params


def can_provide(container: _injector.Injector, dependency: Any) -> bool:
    """Whether the injector can build ``dependency``: bound, or concrete and auto-bindable."""
    if dependency in container.binder._bindings:
        return True
    if inspect.isabstract(dependency) or getattr(dependency, "_is_protocol", False):
        return False
    try:
        container.binder.get_binding(dependency)
    except (_injector.UnsatisfiedRequirement, _injector.CallError, TypeError):
        return False
    return True


def check_services(params: list[Param], container: _injector.Injector, owner: str) -> None:
    """Fail at start-up, not at the first call, when a service type cannot be provided."""
    for p in params:
        if p.kind == "service" and not can_provide(container, p.type):
            name = getattr(p.type, "__name__", repr(p.type))
            raise MissingBinding(
                f"{owner} needs {name} for parameter {p.name!r}, but nothing provides it "
                f"(abstract or not bound). Bind it in a module: module.bind({name}, to=...)."
            )


@dataclass(frozen=True, slots=True)
class CommandHandler:
    """A registered handler of one command type."""

    command: type[Command]
    fn: Callable[..., Awaitable[Any] | Any]
    params: tuple[Param, ...]
    module: str

    @classmethod
    def create(cls, command: type[Command], fn: Callable[..., Any], module: str) -> CommandHandler:
        owner = f"handler {getattr(fn, '__qualname__', fn)!r} of {command.__name__}"
        params = resolve_params(fn, special={Command: "command"}, owner=owner)
        if not any(p.kind == "command" for p in params):
            raise ConfigurationError(
                f"{owner} must take the command as a parameter annotated {command.__name__}"
            )
        return cls(command, fn, tuple(params), module)
