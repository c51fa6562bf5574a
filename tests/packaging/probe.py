"""Run inside a fresh virtualenv holding the dddframe wheel and one extra (never the checkout):
``python probe.py KIND URL [BROKER]`` starts an application on that extra's transport, runs a
command and waits until its event is delivered; ``core`` also checks that every missing extra
is named in the error a user gets."""

import asyncio
import importlib
import sys
import uuid

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

import dddframe
from dddframe import Aggregate, Application, Command, DomainEvent, Module, Repository
from dddframe.database import Database
from dddframe.errors import MissingDependency
from dddframe.outbox.schema import drop_schema


class Noted(DomainEvent):
    __event_name__ = "Probe:Noted"
    text: str


class Note(Aggregate):
    __tablename__ = "probe_notes"
    text: Mapped[str] = mapped_column(String(100))


class TakeNote(Command):
    text: str


SEEN: list[str] = []


class Recorder:
    async def on_noted(self, event: Noted) -> None:
        SEEN.append(event.text)


probe = Module("probe")
probe.controller(Recorder)
probe.listen("Probe:Noted", "Recorder.on_noted")


@probe.handles(TakeNote)
async def take_note(cmd: TakeNote, notes: Repository[Note]) -> str:
    note = Note(id=uuid.uuid4(), text=cmd.text)
    note.domain_event(Noted(text=cmd.text))
    notes.add(note)
    return cmd.text


def bus_for(kind: str, extra: str) -> object:
    unique = uuid.uuid4().hex[:8]
    if kind == "kafka":
        from dddframe.bus.kafka import KafkaBus, KafkaCluster

        cluster = KafkaCluster(bootstrap=extra, enable_idempotence=False)
        prefix = f"pkg{unique}."
        return KafkaBus(clusters={"default": cluster}, topic_prefix=prefix, group_prefix=prefix)
    if kind == "amqp":
        from dddframe.bus.amqp import AmqpBus

        return AmqpBus(extra, exchange=f"pkg-{unique}", queue_prefix=f"pkg-{unique}.")
    if kind in ("postgres", "mysql"):
        return "database"
    return "inprocess"


def expect_missing(extra: str, action: object) -> None:
    try:
        action() if callable(action) else importlib.import_module(str(action))
    except MissingDependency as exc:
        assert f"pip install 'dddframe[{extra}]'" in str(exc), exc
        return
    raise AssertionError(f"no MissingDependency naming dddframe[{extra}] for {action}")


async def deliver(kind: str, url: str, extra: str) -> None:
    db = Database(url)
    try:
        await drop_schema(db, Note.metadata)
    finally:
        await db.dispose()
    app = Application(modules=[probe], database_url=url, bus=bus_for(kind, extra))  # type: ignore[arg-type]
    async with app:
        await app.create_schema()
        await app.engine.run(TakeNote(text=f"hello {kind}"))
        await app.drain(timeout=60)
    assert [f"hello {kind}"] == SEEN, SEEN


async def over_http(url: str) -> None:
    import httpx
    from fastapi import FastAPI

    from dddframe.integrations.fastapi import EngineDep, install, lifespan

    app = Application(modules=[probe], database_url=url)
    api = FastAPI(lifespan=lifespan(app, create_schema=True))
    install(api, status_page=app, status_token="probe-status-token-0123")  # its stylesheet ships

    @api.post("/notes")
    async def note(cmd: TakeNote, engine: EngineDep) -> str:
        return str(await engine.run(cmd))

    async with api.router.lifespan_context(api):
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
            response = await client.post("/notes", json={"text": "hello fastapi"})
            assert response.status_code == 200, response.text
            bad = await client.post("/notes", json={})
            assert bad.headers["content-type"] == "application/problem+json", bad.text
            css = await client.get("/dddframe/static/status.css")
            assert css.status_code == 200 and "@media" in css.text, css.text
        await app.drain(timeout=30)
    assert SEEN == ["hello fastapi"], SEEN


def main() -> None:
    kind, url = sys.argv[1], sys.argv[2]
    extra = sys.argv[3] if len(sys.argv) > 3 else ""
    assert "site-packages" in (dddframe.__file__ or ""), dddframe.__file__
    try:
        importlib.import_module("example_shop")
    except ModuleNotFoundError:
        pass
    else:
        raise AssertionError("the wheel installed a top-level example_shop package")
    if kind == "core":
        expect_missing("kafka", lambda: Application(modules=[], bus="kafka"))
        expect_missing("amqp", "dddframe.bus.amqp")
        expect_missing("postgres", lambda: Database("postgresql+asyncpg://u@127.0.0.1/x"))
        expect_missing("mysql", lambda: Database("mysql+aiomysql://u@127.0.0.1/x"))
        expect_missing("fastapi", "dddframe.integrations.fastapi")
        expect_missing("alembic", "dddframe.integrations.alembic")
    if kind == "fastapi":
        asyncio.run(over_http(url))
    else:
        asyncio.run(deliver(kind, url, extra))
    print(f"probe {kind}: ok")


if __name__ == "__main__":
    main()
