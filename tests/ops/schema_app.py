"""A tiny database-bus application for the schema tests: notes whose listener records them."""

from __future__ import annotations

import os
import uuid

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from dddframe import Aggregate, Application, Command, DomainEvent, Module, Repository
from dddframe.bus.database import DatabaseBus

URL_ENV = "DDDFRAME_SCHEMA_TEST_URL"


class NoteTaken(DomainEvent):
    __event_name__ = "Schema:NoteTaken"
    note_id: uuid.UUID
    text: str


class Note(Aggregate):
    __tablename__ = "schema_test_notes"
    text: Mapped[str] = mapped_column(String(200))


class TakeNote(Command):
    text: str


class Recorder:
    seen: list[str] = []

    async def on_taken(self, event: NoteTaken) -> None:
        Recorder.seen.append(event.text)


notes = Module("schema_notes")
notes.controller(Recorder)
notes.listen("Schema:NoteTaken", "Recorder.on_taken")


@notes.handles(TakeNote)
async def take_note(cmd: TakeNote, repo: Repository[Note]) -> uuid.UUID:
    note = Note(id=uuid.uuid4(), text=cmd.text)
    note.domain_event(NoteTaken(note_id=note.id, text=cmd.text))
    repo.add(note)
    return note.id


def make_app(consume: bool = True) -> Application:
    """``--app tests.ops.schema_app:make_app``; the URL comes from the environment."""
    return Application(
        modules=[notes],
        database_url=os.environ[URL_ENV],
        bus=DatabaseBus(run_interval=0.05),
        consume=consume,
    )
