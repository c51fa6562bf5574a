"""Input checks on every entry point: headers (one check), name and key limits, and the
exception hierarchy (builtin bases, NotStarted)."""

from __future__ import annotations

from typing import Any

import pytest
from injector import inject
from sqlalchemy import String, insert
from sqlalchemy.orm import Mapped, mapped_column

from dddframe import Aggregate, Application, Command, DomainEvent, EventContext, Module, Repository
from dddframe.bus.database import DatabaseBus
from dddframe.bus.retry import NoRetry
from dddframe.domain.envelope import Envelope
from dddframe.domain.limits import HEADERS_MAX_BYTES, NAME_MAX
from dddframe.errors import (
    CommandValidationError,
    ConfigurationError,
    DddframeError,
    DeadLetterNotFound,
    EventSerializationError,
    InvalidHeader,
    LimitExceeded,
    NotFound,
    NotStarted,
    UnknownEventName,
)
from dddframe.outbox.records import envelope_to_row
from dddframe.outbox.tables import outbox_table
from tests.core.conftest import AppFactory, count, outbox_rows


class Noted(DomainEvent):
    __event_name__ = "Valid:Noted"
    text: str


class Note(Aggregate):
    __tablename__ = "valid_notes"
    text: Mapped[str] = mapped_column(String(64), default="")

    def write(self, text: str, headers: Any = None) -> None:
        self.text = text
        self.domain_event(Noted(text=text), headers=headers)


class WriteNote(Command):
    text: str


class Seen:
    def __init__(self) -> None:
        self.headers: list[dict[str, Any]] = []
        self.errors: list[BaseException] = []
        self.calls = 0


class NoteWatcher:
    @inject
    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    async def on_noted(self, event: Noted, ctx: EventContext) -> None:
        self.seen.headers.append(dict(ctx.headers))
        if event.text == "reply-badly":
            try:
                await ctx.publish("Valid:Reply", {}, headers={"attempt": 2})  # type: ignore[dict-item]
            except Exception as exc:  # what the listener sees is the assertion
                self.seen.errors.append(exc)


def notes(seen: Seen) -> Module:
    m = Module("valid")
    m.event("Valid:Reply", "Valid:Ping")

    @m.handles(WriteNote)
    async def write_note(cmd: WriteNote, notes: Repository[Note]) -> None:
        seen.calls += 1
        note = Note()
        note.write(cmd.text)
        notes.add(note)

    m.bind(Seen, to=seen)
    m.controller(NoteWatcher)
    m.listen("Valid:Noted", "NoteWatcher.on_noted", retry=NoRetry())
    return m


BAD_HEADERS: list[tuple[Any, str]] = [
    ({"retries": 3}, "header 'retries' has the value 3 of type int"),
    ({"tenant": object()}, "header 'tenant' has the value <object object at"),
    ({"tenant": None}, "header 'tenant' has the value None"),
    ({"raw": b"x"}, "header 'raw' has the value b'x' of type bytes"),
    ({7: "seven"}, "header names must be non-empty str, not 7"),
    ({"": "empty"}, "header names must be non-empty str, not ''"),
    ({"big": "x" * HEADERS_MAX_BYTES}, f"the limit is {HEADERS_MAX_BYTES}"),
    ({"odd": "\udcff"}, "not valid text"),
    (["not", "a", "mapping"], "headers must be a mapping of str to str, not list"),
]


@pytest.mark.parametrize(("headers", "message"), BAD_HEADERS, ids=lambda v: str(v)[:20])
async def test_engine_run_refuses_bad_headers_before_running_anything(
    sqlite_db: str, make_app: AppFactory, headers: Any, message: str
) -> None:
    seen = Seen()
    async with make_app(sqlite_db, [notes(seen)]) as app:
        with pytest.raises(InvalidHeader, match=r"engine\.run\(headers=\.\.\.\)") as caught:
            await app.engine.run(WriteNote(text="a"), headers=headers)
        assert message in str(caught.value)
        assert seen.calls == 0
        assert await count(app.database, outbox_table) == 0


@pytest.mark.parametrize(("headers", "message"), BAD_HEADERS, ids=lambda v: str(v)[:20])
async def test_every_publish_refuses_bad_headers(
    sqlite_db: str, make_app: AppFactory, headers: Any, message: str
) -> None:
    seen = Seen()
    async with make_app(sqlite_db, [notes(seen)]) as app:
        entries = {
            "app.publish": app.publish,
            "engine.publish": app.engine.publish,
            "bus.publish": app.bus.publish,  # type: ignore[attr-defined]
        }
        for where, publish in entries.items():
            with pytest.raises(InvalidHeader) as caught:
                await publish("Valid:Ping", {}, headers=headers)
            assert message in str(caught.value), where
            assert "publish(headers=...)" in str(caught.value), where
        assert await count(app.database, outbox_table) == 0


async def test_the_error_names_the_entry_point(sqlite_db: str, make_app: AppFactory) -> None:
    async with make_app(sqlite_db, [notes(Seen())]) as app:
        with pytest.raises(InvalidHeader, match=r"^app\.publish\(headers=\.\.\.\): header 'n'"):
            await app.publish("Valid:Ping", {}, headers={"n": 1})  # type: ignore[dict-item]
        with pytest.raises(InvalidHeader, match=r"^publish\(headers=\.\.\.\): header 'n'"):
            await app.engine.publish("Valid:Ping", {}, headers={"n": 1})  # type: ignore[dict-item]


def test_domain_event_uses_the_same_header_check() -> None:
    note = Note()
    with pytest.raises(InvalidHeader, match=r"domain_event\('Valid:Noted', headers=\.\.\.\)"):
        note.write("a", headers={"n": 1})
    with pytest.raises(EventSerializationError):  # what domain_event raised before, still true
        note.write("a", headers={"n": object()})
    assert note.pending_events == []


async def test_event_context_publish_refuses_bad_headers(
    sqlite_db: str, make_app: AppFactory
) -> None:
    seen = Seen()
    async with make_app(sqlite_db, [notes(seen)]) as app:
        await app.engine.run(WriteNote(text="reply-badly"))
        await app.drain()
        names = [r.name for r in await outbox_rows(app)]
    assert len(seen.errors) == 1
    assert isinstance(seen.errors[0], InvalidHeader)
    assert "ctx.publish(headers=...): header 'attempt' has the value 2" in str(seen.errors[0])
    assert names == ["Valid:Noted"]  # the reply was never written


async def test_database_bus_prepare_and_publish_refuse_bad_headers(
    sqlite_db: str, make_app: AppFactory
) -> None:
    async with make_app(sqlite_db, [notes(Seen())], bus=DatabaseBus(run_interval=0.05)) as app:
        bus = app.bus
        assert isinstance(bus, DatabaseBus)
        with pytest.raises(InvalidHeader, match=r"bus\.prepare\(headers=\.\.\.\): header 'n'"):
            async with bus.prepare([("Valid:Ping", {})], headers={"n": 1}):  # type: ignore[dict-item]
                pass
        with pytest.raises(InvalidHeader, match="header 'n' has the value <object"):
            await bus.publish("Valid:Ping", {}, headers={"n": object()})  # type: ignore[dict-item]
        assert await count(app.database, outbox_table) == 0


async def test_good_headers_reach_listeners_as_str(sqlite_db: str, make_app: AppFactory) -> None:
    seen = Seen()
    async with make_app(sqlite_db, [notes(seen)]) as app:
        await app.engine.run(WriteNote(text="a"), headers={"x-tenant": "acme"})
        await app.drain()
    assert seen.headers[0]["x-tenant"] == "acme"
    assert all(isinstance(v, str) for v in seen.headers[0].values())


# -- limits ----------------------------------------------------------------------------------


def test_long_names_are_refused_where_they_are_declared() -> None:
    long = "Valid:" + "x" * 1000
    with pytest.raises(ConfigurationError, match=r"1006 characters long; the limit is 255"):

        class TooLong(DomainEvent):
            __event_name__ = long

    with pytest.raises(ConfigurationError, match="limit is 255"):
        Module("m").event(long)
    with pytest.raises(ConfigurationError, match="limit is 255"):
        Module("m").listen(long, "A.b")
    with pytest.raises(ConfigurationError, match="subscription name"):
        Module("m").listen("Valid:Noted", "A.b", group="g" * 260)
    with pytest.raises(ConfigurationError, match="aggregate type"):

        class Wide(Aggregate):
            __tablename__ = "valid_wide"
            __aggregate_type__ = "W" * 300

    assert outbox_table.c.name.type.length == NAME_MAX  # type: ignore[attr-defined]


def test_broker_names_are_refused_by_the_bus_constructor() -> None:
    from dddframe.bus.amqp import AmqpBus
    from dddframe.bus.kafka import KafkaBus, KafkaCluster

    cluster = {"main": KafkaCluster(bootstrap="127.0.0.1:1")}
    with pytest.raises(ConfigurationError, match=r"249 \(Kafka"):
        KafkaBus(cluster, topics={"Valid:Noted": "t" * 250})
    with pytest.raises(ConfigurationError, match="topic prefix"):
        KafkaBus(cluster, topic_prefix="p" * 249)
    with pytest.raises(ConfigurationError, match="not valid: use letters"):
        KafkaBus(cluster, topics={"Valid:Noted": "has space"})
    with pytest.raises(ConfigurationError, match="256 bytes in UTF-8; the broker allows 255"):
        AmqpBus("amqp://127.0.0.1/", exchange="e" * 256)
    with pytest.raises(ConfigurationError, match="queue prefix"):
        AmqpBus("amqp://127.0.0.1/", queue_prefix="é" * 200)


async def test_long_names_and_keys_at_run_time_fail_before_writing(
    any_db: str, make_app: AppFactory
) -> None:
    """On PostgreSQL and MariaDB these reached the database and failed with a DBAPIError."""
    async with make_app(any_db, [notes(Seen()), _shouting()]) as app:
        with pytest.raises(ConfigurationError, match=r"message name .* 1000 characters"):
            await app.publish("m" * 1000, {})
        with pytest.raises(LimitExceeded, match=r"key=\.\.\.\): the key .* limit is 247"):
            await app.publish("Valid:Ping", {}, key="k" * 248)
        with pytest.raises(InvalidHeader, match="the limit is 65535"):
            await app.publish("Valid:Ping", {}, headers={"h": "v" * 70_000})
        with pytest.raises(ConfigurationError, match="limit is 255"):
            await app.engine.run(_Shout(text="n" * 300))
        assert await count(app.database, outbox_table) == 0
        await app.publish("Valid:Ping", {}, key="k" * 247)  # the longest key that fits
        assert await count(app.database, outbox_table) == 1


class _Shout(Command):
    text: str


def _shouting() -> Module:
    m = Module("shouting")

    @m.handles(_Shout)
    async def shout(cmd: _Shout, notes: Repository[Note]) -> None:
        note = Note()
        note.domain_event(cmd.text, {})
        notes.add(note)

    return m


# -- the exception hierarchy -----------------------------------------------------------------


def test_exceptions_have_builtin_bases_where_one_fits() -> None:
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(UnknownEventName, ValueError)
    assert issubclass(CommandValidationError, ValueError)
    assert issubclass(NotFound, LookupError)
    assert issubclass(DeadLetterNotFound, LookupError)
    assert issubclass(NotStarted, RuntimeError)
    assert issubclass(InvalidHeader, EventSerializationError)
    assert issubclass(InvalidHeader, ValueError)
    assert issubclass(LimitExceeded, ValueError)
    for cls in (ConfigurationError, NotFound, NotStarted, InvalidHeader, LimitExceeded):
        assert issubclass(cls, DddframeError)
    try:
        raise NotFound("No Note with id 1")
    except LookupError as exc:
        assert str(exc) == "No Note with id 1"


async def test_using_an_application_before_start_is_not_started(sqlite_db: str) -> None:
    app = Application([notes(Seen())], sqlite_db)
    with pytest.raises(NotStarted, match="not started"):
        app.engine  # noqa: B018
    with pytest.raises(RuntimeError, match="async with Application"):
        await app.publish("Valid:Ping", {})
    bus = DatabaseBus()
    with pytest.raises(NotStarted, match="database bus is not started"):
        async with bus.prepare([("Valid:Ping", {})]):
            pass


class Versioned(DomainEvent):
    __event_name__ = "Valid:Versioned"
    __event_version__ = 2
    n: int


class VersionWatcher:
    async def on_versioned(self, event: Versioned) -> None:
        raise AssertionError("a payload without an upcaster must not reach the listener")


async def test_a_missing_upcaster_is_dead_lettered_as_such(
    sqlite_db: str, make_app: AppFactory
) -> None:
    """A missing upcaster raises UnknownEventName, a ValueError now: it must not be reported
    as a payload that is not valid JSON."""
    m = Module("versions")
    m.controller(VersionWatcher)
    m.listen("Valid:Versioned", "VersionWatcher.on_versioned", retry=NoRetry())
    async with make_app(sqlite_db, [m]) as app:
        old = Envelope.new("Valid:Versioned", '{"n": 1}', event_version=1)
        async with app.database.engine.begin() as conn:
            await conn.execute(insert(outbox_table), [envelope_to_row(old)])
        app.bus.notify([old])
        await app.drain()
        letters = await app.dead_letters.list()
    assert len(letters) == 1
    assert "cannot upcast 'Valid:Versioned'" in (letters[0].error or "")
    assert "no upcaster is registered" in (letters[0].error or "")
