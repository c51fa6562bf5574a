"""Logging ids, OpenTelemetry spans (SDK in-memory exporter) and Prometheus metrics."""

from __future__ import annotations

import logging
import uuid

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from dddframe import (
    Aggregate,
    Application,
    Command,
    DomainEvent,
    EventContext,
    Module,
    NoRetry,
    Repository,
)
from dddframe.bus.inprocess import InProcessBus
from dddframe.domain.envelope import TRACEPARENT
from dddframe.observability.logging import DeliveryContextFilter
from dddframe.observability.metrics import update_lag
from dddframe.observability.tracing import relay_span
from dddframe.outbox.reader import PositionStore
from dddframe.outbox.status import read_status
from dddframe.testing import reset_database


class AlarmRaised(DomainEvent):
    __event_name__ = "Obs:AlarmRaised"
    alarm_id: uuid.UUID
    level: str


class Alarm(Aggregate):
    __tablename__ = "obs_alarms"
    level: Mapped[str] = mapped_column(String(20))


class RaiseAlarm(Command):
    level: str


log = logging.getLogger("tests.obs.pager")


class Pager:
    """critical alarms raise a follow-up 'page' alarm; 'broken' ones fail."""

    async def on_raised(self, event: AlarmRaised, ctx: EventContext) -> None:
        log.info("paging for %s", event.level)
        if event.level == "broken":
            raise RuntimeError("pager offline")
        if event.level == "critical":
            await ctx.run(RaiseAlarm(level="page"))


obs = Module("obs")
obs.controller(Pager)
obs.listen("Obs:AlarmRaised", "Pager.on_raised", retry=NoRetry())
SUB = "obs.Pager.on_raised"


@obs.handles(RaiseAlarm)
async def raise_alarm(cmd: RaiseAlarm, alarms: Repository[Alarm]) -> uuid.UUID:
    alarm = Alarm(id=uuid.uuid4(), level=cmd.level)
    alarm.domain_event(AlarmRaised(alarm_id=alarm.id, level=cmd.level))
    alarms.add(alarm)
    return alarm.id


async def _app(url: str) -> Application:
    await reset_database(url)
    app = Application(modules=[obs], database_url=url, bus=InProcessBus(poll_interval=0.05))
    await app.start()
    await app.create_schema()
    return app


def _by_name(spans: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for s in spans.get_finished_spans():
        out.setdefault(s.name, []).append(s)
    return out


async def test_spans_link_command_listener_and_follow_up(
    sqlite_db: str, spans: InMemorySpanExporter
) -> None:
    app = await _app(sqlite_db)
    try:
        await app.engine.run(RaiseAlarm(level="critical"))
        await app.drain()
    finally:
        await app.stop()
    got = _by_name(spans)
    commands = got["dddframe.command RaiseAlarm"]
    delivers = got["dddframe.deliver Obs:AlarmRaised"]
    assert len(commands) == 2 and len(delivers) == 2
    root = next(c for c in commands if c.parent is None)
    follow = next(c for c in commands if c.parent is not None)
    first_delivery = next(
        d for d in delivers if d.parent and d.parent.span_id == root.context.span_id
    )
    # one trace: command -> delivery -> follow-up command -> its delivery
    assert {s.context.trace_id for s in commands + delivers} == {root.context.trace_id}
    assert first_delivery.kind == SpanKind.CONSUMER
    assert follow.parent is not None and follow.parent.span_id == first_delivery.context.span_id
    second = next(d for d in delivers if d is not first_delivery)
    assert second.parent is not None and second.parent.span_id == follow.context.span_id
    assert root.attributes is not None and root.attributes["dddframe.outbox.events"] == 1
    assert first_delivery.attributes is not None
    assert first_delivery.attributes["dddframe.subscription"] == SUB


async def test_failed_delivery_span_is_error_and_relay_span_joins_trace(
    sqlite_db: str, spans: InMemorySpanExporter
) -> None:
    app = await _app(sqlite_db)
    try:
        await app.engine.run(RaiseAlarm(level="broken"))
        await app.drain()
        (dead,) = await app.dead_letters.list(subscription=SUB)
    finally:
        await app.stop()
    env = dead.envelope
    assert TRACEPARENT in env.headers
    with relay_span(env, "relay.kafka", "alarms"):
        pass
    got = _by_name(spans)
    (command,) = got["dddframe.command RaiseAlarm"]
    (delivery,) = got["dddframe.deliver Obs:AlarmRaised"]
    (relay,) = got["dddframe.relay Obs:AlarmRaised"]
    assert delivery.status.status_code == StatusCode.ERROR
    assert any(e.name == "exception" for e in delivery.events)
    assert relay.kind == SpanKind.PRODUCER
    assert relay.parent is not None and relay.parent.span_id == command.context.span_id


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(DeliveryContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_log_lines_carry_event_and_correlation_ids(sqlite_db: str) -> None:
    handler = _Collect()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    app = await _app(sqlite_db)
    try:
        await app.engine.run(RaiseAlarm(level="minor"), headers={"correlation_id": "corr-1"})
        await app.engine.run(RaiseAlarm(level="broken"), headers={"correlation_id": "corr-2"})
        await app.drain()
        envs = {d.envelope.payload()["level"]: d.envelope for d in await app.dead_letters.list()}
    finally:
        await app.stop()
        root.removeHandler(handler)
        root.setLevel(old_level)
    pager = [r for r in handler.records if r.name == "tests.obs.pager"]
    assert [(r.getMessage(), r.correlation_id) for r in pager] == [  # type: ignore[attr-defined]
        ("paging for minor", "corr-1"),
        ("paging for broken", "corr-2"),
    ]
    assert all(r.event_id != "-" for r in pager)  # type: ignore[attr-defined]
    (dead_line,) = [r for r in handler.records if "dead-lettered" in r.getMessage()]
    assert dead_line.event_id == str(envs["broken"].event_id)  # type: ignore[attr-defined]
    assert dead_line.correlation_id == "corr-2"  # type: ignore[attr-defined]
    delivered = [r for r in handler.records if r.name == "dddframe.listener"]
    assert delivered and all(r.correlation_id == "corr-1" for r in delivered)  # type: ignore[attr-defined]


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"subscription": SUB}) or 0.0


async def test_prometheus_counters_and_lag_gauge(sqlite_db: str) -> None:
    before = {
        n: _sample(n)
        for n in (
            "dddframe_events_delivered_total",
            "dddframe_events_failed_total",
            "dddframe_events_dead_lettered_total",
        )
    }
    app = await _app(sqlite_db)
    try:
        for level in ("a", "b", "broken"):
            await app.engine.run(RaiseAlarm(level=level))
        await app.drain()
        async with app.database.connect() as conn:
            await PositionStore().save(conn, SUB, 1)  # as if a worker were two events behind
            await conn.commit()
            update_lag(await read_status(conn, {SUB: None}))
    finally:
        await app.stop()
    assert (
        _sample("dddframe_events_delivered_total") - before["dddframe_events_delivered_total"] == 2
    )
    assert _sample("dddframe_events_failed_total") - before["dddframe_events_failed_total"] == 1
    assert (
        _sample("dddframe_events_dead_lettered_total")
        - before["dddframe_events_dead_lettered_total"]
        == 1
    )
    assert _sample("dddframe_subscription_lag_events") == 2
    assert _sample("dddframe_subscription_dead_letters") == 1
