"""Building an application's subscriptions at start-up: one per listener, one per process
manager, every name resolved and checked (with close matches) before anything runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import injector as _injector

from dddframe.app.binding import ControllerIndex, listener_options, resolve_target
from dddframe.app.module import ListenerBinding, Module
from dddframe.bus.listener import (
    ListenerTarget,
    Middleware,
    TxChecker,
    make_checker,
    make_deliver,
)
from dddframe.bus.protocol import EventBus
from dddframe.bus.subscription import Subscription
from dddframe.domain.envelope import Envelope
from dddframe.domain.events import EventRegistry
from dddframe.engine.command import Command
from dddframe.engine.engine import Engine
from dddframe.engine.handlers import Param, check_services
from dddframe.engine.schedules import ScheduleRunner, Schedules
from dddframe.errors import ConfigurationError, PoisonEvent, close_matches
from dddframe.processes.binding import resolve_steps
from dddframe.processes.steps import ProcessRuntime
from dddframe.processes.timers import ProcessRelease, ProcessTimeout

__all__ = ["listener_subscriptions", "process_subscriptions"]


def listener_subscriptions(
    modules: Sequence[Module],
    *,
    engine: Engine,
    bus: EventBus,
    registry: EventRegistry,
    container: _injector.Injector,
    middleware: Sequence[Middleware],
    tx_checkers: dict[str, TxChecker],
) -> list[Subscription]:
    """One subscription per listener of ``modules`` (each bound event name keeps its own
    decoding target); every ``listen()`` and its options are checked here, with close
    matches. Fills ``tx_checkers`` with the modules' half-message checkers."""
    controllers = ControllerIndex(modules)
    grouped: dict[tuple[str, str], list[tuple[ListenerBinding, ListenerTarget]]] = {}
    for m in modules:
        for b in m.listeners:
            target = resolve_target(
                b.target,
                module=m.name,
                event_name=b.event_name,
                controllers=controllers,
                registry=registry,
                container=container,
            )
            listener_options(bus, b)  # check every listen(), so no typo hides
            grouped.setdefault((b.group, b.target), []).append((b, target))
        for c in m.tx_checkers:
            if c.event_name in tx_checkers:
                raise ConfigurationError(
                    f"Two tx_checkers for {c.event_name!r}; a half message has one checker."
                )
            target = resolve_target(
                c.target,
                module=m.name,
                event_name=c.event_name,
                controllers=controllers,
                registry=registry,
                container=container,
            )
            tx_checkers[c.event_name] = make_checker(target, container=container, registry=registry)
    chain = [*middleware, *(mw for m in modules for mw in m.middlewares)]
    subs: list[Subscription] = []
    for (group, listener), items in grouped.items():
        first, target = items[0]
        by_name = {b.event_name: t for b, t in items}
        # One subscription per listener; each event name keeps its own decoding target.
        delivers = {
            name: make_deliver(
                t,
                container=container,
                registry=registry,
                engine=engine,
                middleware=chain,
            )
            for name, t in by_name.items()
        }
        subs.append(
            Subscription(
                name=f"{group}.{listener}",
                group=group,
                listener=listener,
                event_names=frozenset(by_name),
                deliver=_route(delivers),
                retry=first.retry or bus.default_retry,
                dead_letter=first.dead_letter or "block_aggregate",
                timeout=first.timeout,
                start=first.start,
                options=listener_options(bus, first),
            )
        )
    return subs


def process_subscriptions(
    modules: Sequence[Module],
    *,
    engine: Engine,
    bus: EventBus,
    registry: EventRegistry,
    container: _injector.Injector,
    schedules: Schedules,
    runner: ScheduleRunner,
    wake: Callable[[], None],
    runtimes: dict[str, ProcessRuntime],
    taken: set[str],
) -> list[Subscription]:
    """One subscription per process manager of ``modules``; fills ``runtimes`` (by process
    name) and makes its timers and releases retry by the process's policy. ``taken``: the
    subscription names in use already."""
    subs: list[Subscription] = []
    taken = set(taken)
    for m in modules:
        for b in m.processes:
            if b.name in runtimes or b.subscription in taken:
                raise ConfigurationError(
                    f"module {m.name!r}: process({b.name}) is registered twice (or its "
                    f"subscription name {b.subscription!r} is taken); register a process "
                    "manager once."
                )
            steps, timers = resolve_steps(b, registry)
            runtime = ProcessRuntime(
                b,
                steps,
                timers,
                engine=engine,
                registry=registry,
                schedules=schedules,
                runner=runner,
                wake=wake,
                container=container,
            )
            assert container is not None
            for step in (*steps.values(), *timers.values()):
                check_services(
                    [Param(n, "service", t) for n, t in step.services],
                    container,
                    f"process {b.name}'s step {step.method}",
                )
            runtimes[b.name] = runtime
            taken.add(b.subscription)
            subs.append(
                Subscription(
                    name=b.subscription,
                    group=b.policy.group,
                    listener=b.name,
                    event_names=frozenset(steps),
                    deliver=runtime.deliver,
                    retry=b.policy.retry or bus.default_retry,
                    # A failed step holds its instance (dddframe.processes.holds), so
                    # its dead letter need not block the aggregate's other instances.
                    dead_letter=b.policy.dead_letter or "continue",
                    timeout=b.policy.timeout,
                    start=b.policy.start,
                )
            )
    policies = {s.listener: s.retry for s in subs}

    def timer_backoff(command: Command, attempts: int) -> float | None:
        # A timer's step (or a held instance's release) retries like the process's event
        # steps: its subscription's policy.
        policy = policies.get(getattr(command, "process", ""))
        return policy.next_delay(attempts) if policy is not None else None

    runner.set_backoff(ProcessTimeout, timer_backoff)
    runner.set_backoff(ProcessRelease, timer_backoff)
    return subs


def _route(delivers: dict[str, Any]) -> Any:
    """One subscription's delivery callable: each bound name keeps its own decoding target.

    A name the subscription is not bound to (a routing-key pattern, a database that compares
    names case-insensitively, a hand-made record) can never be delivered: it is poison,
    dead-lettered at once with the reason, never retried.
    """
    if len(delivers) == 1:
        return next(iter(delivers.values()))

    async def deliver(envelope: Envelope, attempt: int, subscription: Subscription) -> None:
        target = delivers.get(envelope.name)
        if target is None:
            raise PoisonEvent(
                f"{subscription.name} is bound to {sorted(delivers)}, not to "
                f"{envelope.name[:200]!r}; nothing here can decode it."
                + close_matches(envelope.name, delivers)
            )
        await target(envelope, attempt, subscription)

    return deliver
