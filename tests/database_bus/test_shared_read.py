"""One call per delivery pass on PostgreSQL: sequence, read the shared batch, mark in flight.

``Sequencer.sequence_and_read`` serves every subscription caught up at the same position. The
batch it returns must be cut where the sequencer's own numbering stopped or at the limit (never
past a position it has not seen committed), and only the subscriptions with events in it are
marked in flight, with the same counting as ``PositionStore.advance_and_mark``.
"""

from __future__ import annotations

from sqlalchemy import insert, select

from dddframe.database import Database
from dddframe.domain.envelope import Envelope
from dddframe.outbox.reader import PositionStore
from dddframe.outbox.records import envelope_to_row
from dddframe.outbox.schema import create_schema
from dddframe.outbox.sequencer import Sequencer
from dddframe.outbox.tables import outbox_table, positions_table
from dddframe.testing import reset_database

SUBSCRIPTIONS = {"s.evens": {"Num:Even"}, "s.nothing": {"Num:Never"}}


async def _marks(db: Database) -> dict[str, tuple[int, int]]:
    async with db.connect() as conn:
        rows = await conn.execute(
            select(
                positions_table.c.subscription,
                positions_table.c.position,
                positions_table.c.inflight,
            )
        )
        return {name: (int(pos), int(inflight)) for name, pos, inflight in rows}


async def test_the_shared_batch_stops_where_numbering_or_the_limit_stopped(
    postgres_db: str,
) -> None:
    await reset_database(postgres_db)
    db = Database(postgres_db)
    try:
        await create_schema(db)
        rows = [
            envelope_to_row(
                Envelope.new(
                    "Num:Even" if i % 2 == 0 else "Num:Odd",
                    "{}",
                    aggregate_type="Num",
                    aggregate_id=f"n{i % 3}",
                    aggregate_version=i // 3 + 1,
                )
            )
            for i in range(25)
        ]
        async with db.connect() as conn:
            await conn.execute(insert(outbox_table), rows)
            for name in SUBSCRIPTIONS:
                await PositionStore().load(conn, name, start="earliest")
            await conn.commit()
        sequencer = Sequencer(batch_size=10)  # numbers 10 per call: 25 rows need three

        async with db.connect() as conn:
            first = await sequencer.sequence_and_read(
                conn, after=0, limit=100, subscriptions=SUBSCRIPTIONS
            )
        assert first is not None
        # The call read what its own numbering had committed (1..10); the rest was numbered
        # afterwards, so the batch stops at 10 and is not complete.
        assert [e.position for e in first.envelopes] == list(range(1, 11))
        assert (first.upto, first.complete, sequencer.head) == (10, False, 25)
        assert first.marked == {"s.evens"}
        assert await _marks(db) == {"s.evens": (0, 1), "s.nothing": (0, 0)}

        async with db.connect() as conn:
            second = await sequencer.sequence_and_read(
                conn, after=10, limit=5, subscriptions=SUBSCRIPTIONS
            )
        assert second is not None
        assert [e.position for e in second.envelopes] == list(range(11, 16))
        assert (second.upto, second.complete) == (15, False)  # cut by the limit
        # The position moved: stored, and the in-flight count starts again at 1.
        assert await _marks(db) == {"s.evens": (10, 1), "s.nothing": (0, 0)}

        async with db.connect() as conn:
            third = await sequencer.sequence_and_read(
                conn, after=15, limit=100, subscriptions={"s.evens": {"Num:Even"}}
            )
        assert third is not None
        assert [e.position for e in third.envelopes] == list(range(16, 26))
        assert (third.upto, third.complete) == (25, True)
        assert [e.name for e in third.envelopes[:2]] == ["Num:Odd", "Num:Even"]
        assert third.envelopes[0].aggregate_id == "n0"  # row 15 in insertion (id) order

        # The same batch tried again (the worker died delivering it): the count goes up.
        async with db.connect() as conn:
            again = await sequencer.sequence_and_read(
                conn, after=15, limit=100, subscriptions={"s.evens": {"Num:Even"}}
            )
        assert again is not None and again.marked == {"s.evens"}
        assert await _marks(db) == {"s.evens": (15, 2), "s.nothing": (0, 0)}
    finally:
        await db.dispose()
