"""Observability overhead: what the logging context, span and counters add to one delivery.

The listener call (``Subscription.deliver``: registry check, validation into the event class,
controller built by the injector, the call) runs in a loop without a database, so the
instrumentation is not hidden behind I/O. Three variants, rounds alternating:

* ``bare``: the instrumentation patched out (the baseline: dddframe before observability);
* ``api``: as shipped with opentelemetry-api and no SDK (spans are no-ops) and prometheus-client;
* ``sdk``: an SDK ``TracerProvider`` recording every span to an in-memory exporter (run last:
  a global tracer provider cannot be unset).

Prints microseconds per delivery (median round) and the ratios to ``bare``.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import dddframe.bus.listener as listener_module
from dddframe import Application, DomainEvent, Module
from dddframe.bus.inprocess import InProcessBus
from dddframe.domain.envelope import Envelope

DELIVERIES = int(os.environ.get("BENCH_OBS_DELIVERIES", "5000"))
ROUNDS = int(os.environ.get("BENCH_OBS_ROUNDS", "5"))


class Observed(DomainEvent):
    __event_name__ = "BenchObs:Observed"
    n: int
    note: str


class Sink:
    count = 0

    async def on_observed(self, event: Observed) -> None:
        Sink.count += 1


bench = Module("bench_obs")
bench.controller(Sink)
bench.listen("BenchObs:Observed", "Sink.on_observed")


@contextlib.contextmanager
def _nothing(*args: Any, **kwargs: Any) -> Iterator[None]:
    yield


@contextlib.contextmanager
def _bare() -> Iterator[None]:
    saved = listener_module.observe_delivery
    listener_module.observe_delivery = _nothing  # type: ignore[assignment]
    try:
        yield
    finally:
        listener_module.observe_delivery = saved


async def _round(deliver: Callable[..., Awaitable[None]], sub: Any, env: Envelope) -> float:
    start = time.perf_counter()
    for _ in range(DELIVERIES):
        await deliver(env, 1, sub)
    return (time.perf_counter() - start) / DELIVERIES * 1e6


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/obs.db"
        app = Application(modules=[bench], database_url=url, bus=InProcessBus(), consume=False)
        async with app:
            (sub,) = app.subscriptions
            env = Envelope.new(
                "BenchObs:Observed",
                '{"n": 1, "note": "hello"}',
                aggregate_type="Bench",
                aggregate_id="a-1",
                aggregate_version=1,
                headers={"correlation_id": "c-1"},
            )
            await _round(sub.deliver, sub, env)  # warm up
            times: dict[str, list[float]] = {"bare": [], "api": []}
            for _ in range(ROUNDS):
                with _bare():
                    times["bare"].append(await _round(sub.deliver, sub, env))
                times["api"].append(await _round(sub.deliver, sub, env))
            from opentelemetry import trace
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
                InMemorySpanExporter,
            )

            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(provider)
            times["sdk"] = []
            for _ in range(ROUNDS):
                times["sdk"].append(await _round(sub.deliver, sub, env))
                exporter.clear()
    bare = statistics.median(times["bare"])
    print(f"deliveries per round: {DELIVERIES}, rounds: {ROUNDS}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name}: {median:.1f} us/delivery, ratio to bare {median / bare:.2f}")
