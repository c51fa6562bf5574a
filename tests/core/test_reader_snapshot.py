"""An empty outbox read must not move past rows numbered between its two statements.

``OutboxReader.read`` reads the batch, and when nothing matched it reads the head in a second
statement. On PostgreSQL (READ COMMITTED) that statement sees rows sequenced in between; moving
the subscription to that head would skip them for good.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from dddframe.database import Database
from dddframe.domain.envelope import Envelope
from dddframe.outbox.reader import OutboxReader
from dddframe.outbox.records import envelope_to_row
from dddframe.outbox.schema import create_schema
from dddframe.outbox.sequencer import Sequencer
from dddframe.outbox.tables import outbox_table
from dddframe.testing import reset_database
from tests.services import database_url


async def _write(db: Database, name: str) -> None:
    env = Envelope.new(name, "{}", aggregate_type="Snap", aggregate_id="a1", aggregate_version=1)
    async with db.connect() as conn:
        await conn.execute(insert(outbox_table), [envelope_to_row(env)])
        await conn.commit()
    async with db.connect() as conn:
        await Sequencer().sequence(conn)


class _CommitsBeforeHead(OutboxReader):
    """Another writer commits and sequences a wanted row right before the head is read."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.fired = False

    async def head(self, conn: AsyncConnection) -> int:
        if not self.fired:
            self.fired = True
            await _write(self.db, "Snap:Wanted")
        return await super().head(conn)


async def test_an_empty_read_does_not_skip_rows_numbered_meanwhile(tmp_path: Path) -> None:
    url = database_url("postgresql", tmp_path)
    await reset_database(url)
    db = Database(url)
    try:
        await create_schema(db)
        await _write(db, "Snap:Other")
        reader = _CommitsBeforeHead(db)
        async with db.connect() as conn:
            envelopes, upto = await reader.read(conn, after=1, limit=10, names={"Snap:Wanted"})
        assert reader.fired
        # Either the wanted row is in this batch, or the position stays before it.
        assert [e.name for e in envelopes] == ["Snap:Wanted"] or upto < 2
    finally:
        await db.dispose()
