"""Modules: one per bounded context. They register command handlers, DI bindings, controllers,
listeners bound by name, event declarations, upcasters and middleware.

>>> from dddframe import Command
>>> class Ping(Command):
...     n: int
>>> m = Module("doc")
>>> @m.handles(Ping)
... async def ping(cmd: Ping) -> int:
...     return cmd.n
>>> m.listen("Doc:Pinged", "PingController.on_pinged", retry=None)
>>> [(b.event_name, b.target) for b in m.listeners]
[('Doc:Pinged', 'PingController.on_pinged')]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import injector as _injector

from dddframe.bus.listener import Middleware
from dddframe.bus.options import ListenerOptions
from dddframe.bus.retry import RetryPolicy
from dddframe.bus.subscription import DeadLetterPolicy, delivery_policy
from dddframe.domain.events import Upcaster
from dddframe.domain.limits import check_name
from dddframe.engine.command import Command
from dddframe.engine.handlers import CommandHandler
from dddframe.errors import ConfigurationError
from dddframe.processes.binding import Correlate, ProcessBinding, process_binding
from dddframe.processes.manager import ProcessManager
from dddframe.projections.binding import ProjectionBinding
from dddframe.projections.projection import Projection

__all__ = ["LISTEN_PARAMETERS", "ListenerBinding", "Module", "TxCheckerBinding"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_TARGET = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")

LISTEN_PARAMETERS = ("retry", "timeout", "dead_letter", "group", "start", "options")
"""The keyword parameters every transport understands (suggested for misspelt options)."""


@dataclass(frozen=True, slots=True)
class ListenerBinding:
    """``module.listen(event_name, "Controller.method", ...)`` as recorded."""

    module: str
    event_name: str
    target: str
    group: str
    retry: RetryPolicy | None
    timeout: float | None
    dead_letter: DeadLetterPolicy | None
    start: str | int
    options: tuple[tuple[str, Any], ...]
    """Transport-specific keywords as given; parsed against the bus's type at start-up."""
    typed_options: ListenerOptions | None = None
    """``listen(..., options=KafkaListenerOptions(...))``; checked against the bus at start-up."""


@dataclass(frozen=True, slots=True)
class TxCheckerBinding:
    """``module.tx_checker(event_name, "Controller.method")``: decides a stale half message."""

    module: str
    event_name: str
    target: str


class Module:
    """A bounded context's setup. Pass modules to :class:`~dddframe.Application`."""

    def __init__(self, name: str, *, package: str | None = None) -> None:
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", name):
            raise ConfigurationError(
                f"Module name {name!r} must be an identifier-like str (letters, digits, _ or -)"
            )
        self.name = name
        self.package = package
        self.handlers: list[CommandHandler] = []
        self.controllers: dict[str, type[Any]] = {}
        self.listeners: list[ListenerBinding] = []
        self.tx_checkers: list[TxCheckerBinding] = []
        self.processes: list[ProcessBinding] = []
        self.events: list[str] = []
        self.upcasters: list[tuple[str, int, Upcaster]] = []
        self.middlewares: list[Middleware] = []
        self.projections: list[ProjectionBinding] = []
        self._configure: list[Callable[[_injector.Binder], None]] = []

    def __repr__(self) -> str:
        return f"Module({self.name!r})"

    # -- commands ---------------------------------------------------------------------

    def handles(self, command: type[Command]) -> Callable[[F], F]:
        """Decorator: register the decorated function as the handler of ``command``."""

        def register(fn: F) -> F:
            self.command(command, fn)
            return fn

        return register

    def command(self, command: type[Command], handler: Callable[..., Any]) -> None:
        """Register ``handler`` for ``command`` (same as :meth:`handles`)."""
        if not (isinstance(command, type) and issubclass(command, Command)):
            raise ConfigurationError(f"{command!r} is not a dddframe.Command subclass")
        self.handlers.append(CommandHandler.create(command, handler, self.name))

    # -- dependency injection -----------------------------------------------------------

    def bind(self, interface: type[T], to: Any = None, *, scope: Any = None) -> None:
        """Bind ``interface`` to a class, instance or provider in the injector."""
        self._configure.append(lambda binder: binder.bind(interface, to=to, scope=scope))

    def configure(self, fn: Callable[[_injector.Binder], None]) -> None:
        """Register a function that receives the injector ``Binder`` for custom bindings."""
        self._configure.append(fn)

    def install(self, binder: _injector.Binder) -> None:
        for fn in self._configure:
            fn(binder)

    # -- controllers and listeners -------------------------------------------------------

    def controller(self, cls: type[T]) -> type[T]:
        """Register a controller class (usable as a decorator)."""
        if not isinstance(cls, type):
            raise ConfigurationError(f"controller() takes a class, got {cls!r}")
        self.controllers[cls.__name__] = cls
        return cls

    def listen(
        self,
        event_name: str,
        target: str,
        *,
        retry: RetryPolicy | Callable[[int], float | None] | None = None,
        timeout: float | None = None,
        dead_letter: DeadLetterPolicy | None = None,
        group: str | None = None,
        start: str | int = "earliest",
        options: ListenerOptions | None = None,
        **transport_options: Any,
    ) -> None:
        """Bind the event ``event_name`` to ``"Controller.method"``; checked at start-up.

        ``retry`` overrides the bus's retry policy, ``timeout`` bounds one call in seconds,
        ``dead_letter`` is ``block_aggregate`` (default) or ``continue``, ``group`` defaults to
        the module name, ``start`` is where a new subscription begins (earliest, latest or a
        position). Transport-specific options (e.g. Kafka's ``retry_mode``) are keywords or a
        typed ``options=`` object (e.g. ``KafkaListenerOptions(retry_mode="topic")``); they are
        checked against the chosen bus when the application starts.
        """
        if not isinstance(event_name, str) or not event_name:
            raise ConfigurationError("listen() needs an event name such as 'Order:Placed'")
        where = f"module {self.name!r}: listen({event_name[:80]!r}, {target!r})"
        check_name(event_name, "event name", where=where)
        if not isinstance(target, str) or not _TARGET.match(target):
            raise ConfigurationError(f"{where}: the target must be 'Controller.method'")
        policy = delivery_policy(
            where,
            name=target,
            group=group if group is not None else self.name,
            retry=retry,
            timeout=timeout,
            dead_letter=dead_letter,
            start=start,
        )
        if options is not None and not isinstance(options, ListenerOptions):
            raise ConfigurationError(
                f"{where}: options must be a transport's ListenerOptions (e.g. "
                f"KafkaListenerOptions(...)), not {type(options).__name__}"
            )
        if options is not None and transport_options:
            raise ConfigurationError(
                f"{where}: pass transport options either as keywords or as options=..., not "
                f"both ({', '.join(sorted(transport_options))})"
            )
        self.listeners.append(
            ListenerBinding(
                module=self.name,
                event_name=event_name,
                target=target,
                group=policy.group,
                retry=policy.retry,
                timeout=policy.timeout,
                dead_letter=policy.dead_letter,
                start=policy.start,
                options=tuple(sorted(transport_options.items())),
                typed_options=options,
            )
        )

    def process(
        self,
        process: type[ProcessManager],
        *,
        correlate_by: Correlate,
        starts_with: str | Iterable[str],
        listen: Mapping[str, str],
        timeouts: Iterable[str] | Mapping[str, str] = (),
        group: str | None = None,
        retry: RetryPolicy | Callable[[int], float | None] | None = None,
        timeout: float | None = None,
        dead_letter: DeadLetterPolicy | None = None,
        start: str | int = "earliest",
    ) -> None:
        """Register a process manager: ``listen`` binds event names to its step methods,
        ``correlate_by`` names the payload field (or a field per event name, or a function
        of the event) that gives the instance's id, ``starts_with`` the events that create
        an instance, ``timeouts`` its timers (``"payment"`` fires ``on_payment_timeout``).
        ``group``, ``retry``, ``timeout`` and ``dead_letter`` are those of ``listen()``; names
        are checked at start-up, with close matches.

        >>> from sqlalchemy.orm import Mapped, mapped_column
        >>> from dddframe import ProcessManager
        >>> class Refund(ProcessManager):
        ...     __tablename__ = "doc_refunds"
        ...     def on_asked(self, event: dict) -> None: ...
        >>> m = Module("doc")
        >>> m.process(Refund, correlate_by="order_id", starts_with="Refund:Asked",
        ...           listen={"Refund:Asked": "on_asked"})
        >>> m.processes[0].subscription
        'doc.Refund'
        """
        self.processes.append(
            process_binding(
                self.name,
                process,
                correlate_by=correlate_by,
                starts_with=starts_with,
                listen=listen,
                timeouts=timeouts,
                group=group,
                retry=retry,
                timeout=timeout,
                dead_letter=dead_letter,
                start=start,
            )
        )

    def tx_checker(self, event_name: str, target: str) -> None:
        """Name the ``"Controller.method"`` that decides a half message left pending."""
        check_name(event_name, "event name", where=f"module {self.name!r}: tx_checker()")
        if not isinstance(target, str) or not _TARGET.match(target):
            raise ConfigurationError(f"tx_checker target {target!r} must be 'Controller.method'")
        self.tx_checkers.append(TxCheckerBinding(self.name, event_name, target))

    def projection(
        self,
        projection: type[Projection],
        *,
        listen: dict[str, str],
        group: str | None = None,
        retry: RetryPolicy | Callable[[int], float | None] | None = None,
        dead_letter: DeadLetterPolicy | None = None,
    ) -> None:
        """Bind a :class:`~dddframe.Projection`'s handler methods to event names:
        ``listen={"Order:Placed": "on_placed"}``; checked at start-up (unknown names get
        "did you mean" suggestions). Its subscription is ``<group>.<ProjectionName>`` (group
        defaults to the module name); ``retry`` and ``dead_letter`` as for :meth:`listen`."""
        if not (isinstance(projection, type) and issubclass(projection, Projection)):
            raise ConfigurationError(
                f"module {self.name!r}: projection({projection!r}): the first argument must be "
                "a dddframe.Projection subclass"
            )
        policy = delivery_policy(
            f"module {self.name!r}: projection({projection.__name__})",
            name=projection.projection_name(),
            group=group if group is not None else self.name,
            retry=retry,
            timeout=None,
            dead_letter=dead_letter,
            start="earliest",
        )
        binding = ProjectionBinding.create(
            self.name,
            projection,
            listen,
            group=policy.group,
            retry=policy.retry,
            dead_letter=policy.dead_letter,
        )
        self.projections.append(binding)

    # -- events --------------------------------------------------------------------------

    def event(self, *names: str) -> None:
        """Declare untyped event or direct-message names (their payload is a plain dict)."""
        for name in names:
            self.events.append(check_name(name, "event name", where=f"module {self.name!r}"))

    def upcaster(self, event_name: str, *, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: turn a ``from_version`` payload of ``event_name`` into the next version."""
        check_name(event_name, "event name", where=f"module {self.name!r}: upcaster()")
        if isinstance(from_version, bool) or not isinstance(from_version, int) or from_version < 1:
            raise ConfigurationError(f"from_version must be an int >= 1, not {from_version!r}")

        def register(fn: Upcaster) -> Upcaster:
            self.upcasters.append((event_name, from_version, fn))
            return fn

        return register

    def middleware(self, mw: Middleware) -> Middleware:
        """Register listener middleware ``async def mw(ctx, call_next)`` (usable as decorator)."""
        self.middlewares.append(mw)
        return mw
