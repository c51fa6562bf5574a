"""Calling a listener: upcast, validate, build the controller, run the middleware chain."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import injector as _injector
from pydantic import ValidationError

from dddframe.bus.context import EventContext
from dddframe.bus.subscription import Subscription
from dddframe.context import current_headers
from dddframe.domain.envelope import Envelope
from dddframe.domain.events import DomainEvent, EventRegistry
from dddframe.errors import PoisonEvent
from dddframe.observability.delivery import observe_delivery

if TYPE_CHECKING:
    from dddframe.engine.engine import Engine

__all__ = [
    "ListenerTarget",
    "Middleware",
    "TxChecker",
    "decode_event",
    "make_checker",
    "make_deliver",
]

log = logging.getLogger("dddframe.listener")

Middleware = Callable[[EventContext, Callable[[], Awaitable[None]]], Awaitable[None]]
"""``async def mw(ctx, call_next): ...; await call_next(); ...`` wraps every listener call."""

TxChecker = Callable[[Envelope], Awaitable[bool]]
"""Decides a half message left prepared: True commits it, False rolls it back."""


@dataclass(frozen=True, slots=True)
class ListenerTarget:
    """A resolved ``"Controller.method"``: the class, the method and how to call it.

    ``event_param``/``event_type``: the parameter that gets the event and its annotation (a
    DomainEvent subclass, ``Envelope``, ``dict``, or None for the raw envelope).
    """

    controller: type[Any]
    method: str
    event_param: str | None
    event_type: Any
    ctx_param: str | None


def _decode(envelope: Envelope, target: ListenerTarget, registry: EventRegistry) -> Any:
    return decode_event(envelope, target.event_type, registry)


def decode_event(envelope: Envelope, t: Any, registry: EventRegistry) -> Any:
    """The event as a handler annotated ``t`` takes it: the envelope (``None``/``Envelope``),
    the upcast payload (``dict``) or a validated DomainEvent; PoisonEvent when it cannot be."""
    if t is None or t is Envelope:
        return envelope
    try:
        payload = registry.upcast(envelope.name, envelope.event_version, envelope.payload())
    except json.JSONDecodeError as exc:
        raise PoisonEvent(f"payload of {envelope.name!r} is not valid JSON: {exc}") from exc
    except Exception as exc:
        raise PoisonEvent(f"cannot upcast {envelope.name!r}: {exc}") from exc
    if t is dict:
        return payload
    if isinstance(t, type) and issubclass(t, DomainEvent):
        try:
            return t.model_validate(payload)
        except ValidationError as exc:
            raise PoisonEvent(
                f"payload of {envelope.name!r} does not validate as {t.__name__}: "
                + "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
                )
            ) from exc
    return payload


def controller_factory(cls: type[Any], container: _injector.Injector) -> Callable[[], Any]:
    """How to build a controller for each delivery, worked out once.

    ``injector.get`` inspects the constructor's signature on every call, which costs more than
    the delivery itself; here the constructor's dependencies are read once. A controller bound
    explicitly in a module (e.g. with a scope) is still built by the injector.
    """
    if cls in container.binder._bindings:
        return lambda: container.get(cls)
    if cls.__init__ is object.__init__:
        return cls
    try:
        dependencies = _injector.get_bindings(cls.__init__)
    except Exception:
        return lambda: container.get(cls)
    if len(inspect.signature(cls.__init__).parameters) != len(dependencies) + 1:
        return lambda: container.get(cls)  # parameters injector fills another way
    return lambda: cls(**{name: container.get(dep) for name, dep in dependencies.items()})


def make_deliver(
    target: ListenerTarget,
    *,
    container: _injector.Injector,
    registry: EventRegistry,
    engine: Engine,
    middleware: Sequence[Middleware] = (),
) -> Callable[[Envelope, int, Subscription], Awaitable[None]]:
    """Build the callable a bus uses to deliver one envelope to this listener.

    Each call runs in a CONSUMER span (child of the envelope's traceparent), with the event and
    correlation ids on every log record, and counts as delivered or failed in the metrics.
    """

    build_controller = controller_factory(target.controller, container)
    method_name, event_param, ctx_param = target.method, target.event_param, target.ctx_param
    wrapped = bool(middleware)

    async def deliver(envelope: Envelope, attempt: int, subscription: Subscription) -> None:
        with observe_delivery(envelope, subscription.name, attempt):
            if not registry.is_known(envelope.name):
                raise PoisonEvent(f"no event class or declaration is named {envelope.name!r}")
            event = _decode(envelope, target, registry)
            ctx = (
                EventContext(envelope, attempt, subscription.name, engine)
                if ctx_param or wrapped
                else None
            )
            method = getattr(build_controller(), method_name)
            kwargs: dict[str, Any] = {}
            if event_param:
                kwargs[event_param] = event
            if ctx_param:
                kwargs[ctx_param] = ctx
            token = current_headers.set(envelope.headers)
            try:
                if wrapped or subscription.timeout is not None:
                    await _call_wrapped(method, kwargs, ctx, middleware, subscription.timeout)
                else:  # the common case, without a closure per event
                    result = method(**kwargs)
                    if inspect.isawaitable(result):
                        await result
            finally:
                current_headers.reset(token)
            log.debug("%s: delivered %s %s", subscription.name, envelope.name, envelope.event_id)

    return deliver


def make_checker(
    target: ListenerTarget, *, container: _injector.Injector, registry: EventRegistry
) -> TxChecker:
    """Build the callable that asks ``Controller.method(event)`` whether a half message
    committed (``module.tx_checker(name, "Controller.method")``)."""

    async def check(envelope: Envelope) -> bool:
        event = _decode(envelope, target, registry)
        method = getattr(container.get(target.controller), target.method)
        kwargs = {target.event_param: event} if target.event_param else {}
        result = method(**kwargs)
        if inspect.isawaitable(result):
            result = await result
        return bool(result)

    return check


async def _call_wrapped(
    method: Callable[..., Any],
    kwargs: dict[str, Any],
    ctx: EventContext | None,
    middleware: Sequence[Middleware],
    timeout: float | None,
) -> None:
    async def call() -> None:
        result = method(**kwargs)
        if inspect.isawaitable(result):
            await result

    chain: Callable[[], Awaitable[None]] = call
    for mw in reversed(middleware):
        assert ctx is not None
        chain = _wrap(mw, ctx, chain)
    if timeout is not None:
        async with asyncio.timeout(timeout):
            await chain()
    else:
        await chain()


def _wrap(
    mw: Middleware, ctx: EventContext, nxt: Callable[[], Awaitable[None]]
) -> Callable[[], Awaitable[None]]:
    async def step() -> None:
        await mw(ctx, nxt)

    return step
