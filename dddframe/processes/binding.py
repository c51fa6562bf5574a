"""``module.process(...)`` as recorded, and its start-up checks with close-match suggestions."""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dddframe.bus.retry import RetryPolicy
from dddframe.bus.subscription import DeliveryPolicy, delivery_policy
from dddframe.domain.envelope import Envelope
from dddframe.domain.events import DomainEvent, EventRegistry
from dddframe.domain.limits import check_name
from dddframe.errors import ConfigurationError, close_matches
from dddframe.processes.context import ProcessContext
from dddframe.processes.manager import ProcessManager

__all__ = ["Correlate", "ProcessBinding", "StepMethod", "process_binding", "resolve_steps"]

Correlate = str | Mapping[str, str] | Callable[[Any], object]
"""How an event names its instance: a payload field for every event, a field per event name,
or a function of the decoded event."""

_METHOD = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class ProcessBinding:
    """``module.process(Fulfilment, correlate_by=..., starts_with=..., listen=...)``."""

    module: str
    process: type[ProcessManager]
    correlate_by: Correlate
    starts_with: frozenset[str]
    listen: tuple[tuple[str, str], ...]
    """(event name, method name) pairs."""
    timeouts: tuple[tuple[str, str], ...]
    """(timer name, method name) pairs."""
    policy: DeliveryPolicy

    @property
    def name(self) -> str:
        """The process's name in schedules and logs: the class name."""
        return self.process.__name__

    @property
    def subscription(self) -> str:
        return f"{self.policy.group}.{self.name}"


@dataclass(frozen=True, slots=True)
class StepMethod:
    """A resolved step: the method and how to call it (event type, whether it takes ctx, the
    services it is given from the application's injector, by parameter name)."""

    method: str
    event_type: Any
    event_param: str | None
    ctx_param: str | None
    services: tuple[tuple[str, Any], ...] = ()


def process_binding(
    module: str,
    process: type[ProcessManager],
    *,
    correlate_by: Correlate,
    starts_with: str | Iterable[str],
    listen: Mapping[str, str],
    timeouts: Iterable[str] | Mapping[str, str] = (),
    group: str | None = None,
    retry: RetryPolicy | Callable[[int], float | None] | None = None,
    timeout: float | None = None,
    dead_letter: str | None = None,
    start: str | int = "earliest",
) -> ProcessBinding:
    """Check the shape of ``module.process(...)``'s arguments (names are resolved at start-up)."""
    where = f"module {module!r}: process({getattr(process, '__name__', process)!r})"
    if not (
        isinstance(process, type)
        and issubclass(process, ProcessManager)
        and hasattr(process, "__table__")
    ):
        raise ConfigurationError(
            f"{where}: the first argument must be a ProcessManager subclass with a "
            "__tablename__, such as `class Fulfilment(ProcessManager): __tablename__ = ...`."
        )
    if not isinstance(listen, Mapping) or not listen:
        raise ConfigurationError(
            f"{where}: listen= maps event names to step methods, such as "
            "{'Order:Placed': 'on_placed'}."
        )
    pairs: list[tuple[str, str]] = []
    for event_name, method in listen.items():
        check_name(event_name, "event name", where=where)
        _check_method(method, where, f"listen[{event_name!r}]")
        pairs.append((event_name, method))
    starts = {starts_with} if isinstance(starts_with, str) else set(starts_with)
    if not starts:
        raise ConfigurationError(f"{where}: starts_with= names the events that start it.")
    for name in sorted(starts):
        if name not in listen:
            raise ConfigurationError(
                f"{where}: starts_with names {name!r}, which is not in listen=; a starting "
                "event needs its step." + close_matches(name, list(listen))
            )
    _check_correlation(correlate_by, listen, where)
    timer_pairs = _timers(timeouts, where)
    policy = delivery_policy(
        where,
        name=process.__name__,
        group=group if group is not None else module,
        retry=retry,
        timeout=timeout,
        dead_letter=dead_letter,
        start=start,
    )
    return ProcessBinding(
        module=module,
        process=process,
        correlate_by=correlate_by,
        starts_with=frozenset(starts),
        listen=tuple(pairs),
        timeouts=timer_pairs,
        policy=policy,
    )


def _check_method(method: object, where: str, what: str) -> None:
    if not isinstance(method, str) or not _METHOD.match(method):
        raise ConfigurationError(f"{where}: {what} must be a method name, not {method!r}.")


def _check_correlation(correlate_by: object, listen: Mapping[str, str], where: str) -> None:
    if isinstance(correlate_by, str):
        if not correlate_by:
            raise ConfigurationError(f"{where}: correlate_by= names a payload field.")
        return
    if isinstance(correlate_by, Mapping):
        missing = [n for n in listen if n not in correlate_by]
        if missing:
            raise ConfigurationError(
                f"{where}: correlate_by= has no field for {missing[0]!r}; give one per event "
                "name in listen=, or one field name for all."
            )
        return
    if not callable(correlate_by):
        raise ConfigurationError(
            f"{where}: correlate_by= is a payload field name, a dict of them per event name, "
            f"or a function of the event, not {correlate_by!r}."
        )


def _timers(timeouts: Iterable[str] | Mapping[str, str], where: str) -> tuple[tuple[str, str], ...]:
    if isinstance(timeouts, str):
        timeouts = [timeouts]
    if isinstance(timeouts, Mapping):
        pairs = list(timeouts.items())
    else:
        pairs = [(name, f"on_{name}_timeout") for name in timeouts]
    for name, method in pairs:
        if not isinstance(name, str) or not _METHOD.match(name):
            raise ConfigurationError(f"{where}: a timer name is an identifier, not {name!r}.")
        _check_method(method, where, f"timeouts[{name!r}]")
    return tuple(pairs)


def resolve_steps(
    binding: ProcessBinding, registry: EventRegistry
) -> tuple[dict[str, StepMethod], dict[str, StepMethod]]:
    """The event steps and timer steps of a process, or a ConfigurationError that says what
    is misspelt (event names, methods, parameters), with close matches."""
    cls = binding.process
    where = f"module {binding.module!r}: process({cls.__name__})"
    steps: dict[str, StepMethod] = {}
    for event_name, method in binding.listen:
        if not registry.is_known(event_name):
            raise ConfigurationError(
                f"{where}: no event is named {event_name!r}. Define a DomainEvent with that "
                f"__event_name__ or declare it with module.event({event_name!r})."
                + close_matches(event_name, registry.names())
            )
        steps[event_name] = _step(cls, method, where, registry.lookup(event_name), event=True)
    timers = {
        name: _step(cls, method, f"{where}, timer {name!r}", None, event=False)
        for name, method in binding.timeouts
    }
    return steps, timers


def _step(
    cls: type[ProcessManager],
    method_name: str,
    where: str,
    event_class: type[DomainEvent] | None,
    *,
    event: bool,
) -> StepMethod:
    method = getattr(cls, method_name, None)
    if method is None or not callable(method) or method_name.startswith("_"):
        public = [n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")]
        raise ConfigurationError(
            f"{where}: {cls.__name__} has no method {method_name!r}."
            + close_matches(method_name, public)
        )
    try:
        hints = typing.get_type_hints(method)
    except Exception as exc:
        raise ConfigurationError(
            f"{where}: cannot read the annotations of {method_name}: {exc}"
        ) from exc
    params = list(inspect.signature(method).parameters.items())[1:]
    ctx_param: str | None = None
    event_type: Any = None
    event_param: str | None = None
    services: list[tuple[str, Any]] = []
    for name, _p in params:
        ann = hints.get(name)
        if ann is ProcessContext:
            ctx_param = name
        elif event and event_param is None and _is_event(ann):
            event_param, event_type = name, ann
        elif ann is not None and not _is_event(ann):
            services.append((name, ann))  # from the injector, checked at start-up
        else:
            wanted = "(event, ctx: ProcessContext" if event else "(ctx: ProcessContext"
            raise ConfigurationError(
                f"{where}: {cls.__name__}.{method_name} takes {wanted}, services annotated "
                f"with their type); {name!r} is extra."
            )
    if isinstance(event_type, type) and issubclass(event_type, DomainEvent):
        if event_class is None or not issubclass(event_class, event_type):
            raise ConfigurationError(
                f"{where}: {method_name}'s event parameter is annotated "
                f"{event_type.__name__}, which is not the class of that event name."
            )
        event_type = event_class
    elif event_type is None and event_class is not None:
        event_type = event_class
    elif event_type is not None and event_type is not Envelope and not _is_dict(event_type):
        raise ConfigurationError(
            f"{where}: annotate {method_name}'s event parameter with the event class, Envelope "
            "or dict."
        )
    elif _is_dict(event_type):
        event_type = dict
    return StepMethod(method_name, event_type, event_param, ctx_param, tuple(services))


def _is_event(ann: Any) -> bool:
    """Whether an annotation names what an event parameter may be."""
    return (
        ann is None
        or ann is Envelope
        or _is_dict(ann)
        or (isinstance(ann, type) and issubclass(ann, DomainEvent))
    )


def _is_dict(t: Any) -> bool:
    return t is dict or typing.get_origin(t) is dict
