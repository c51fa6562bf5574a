"""Rows by primary key through the view (``view.get/put/delete``) on SQLite, PostgreSQL and
MariaDB: written per event live and once per batch in a rebuild, both equal to a model of the
events kept in Python; a resumed rebuild reads back what the interrupted one wrote; a cache that
outgrows its limit reads from the database again; misuse fails with a clear error."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select

from dddframe import Application, Module, Projection, ProjectionView
from dddframe.errors import UsageError
from dddframe.projections import RebuildProgress
from dddframe.projections.rows import RowCache
from tests.projections.conftest import AppFactory
from tests.projections.model import keep_placing

metadata = MetaData()


def _tables(prefix: str) -> tuple[Table, Table, Table]:
    return (
        Table(
            f"{prefix}_orders",
            metadata,
            Column("order_id", String(40), primary_key=True),
            Column("lines", Integer, nullable=False),
            Column("total", Integer, nullable=False),
            Column("note", String(40), nullable=True, default="new"),
        ),
        Table(
            f"{prefix}_by_amount",  # a composite key: (order, amount) -> how many lines
            metadata,
            Column("order_id", String(40), primary_key=True),
            Column("amount", Integer, primary_key=True),
            Column("n", Integer, nullable=False),
        ),
        Table(
            f"{prefix}_grand",
            metadata,
            Column("id", Integer, primary_key=True),
            Column("total", Integer, nullable=False),
        ),
    )


PLACED, LINE, CANCELLED = "Rows:Placed", "Rows:LineAdded", "Rows:Cancelled"


class RowTotals(Projection):
    """Orders, lines by amount and a grand total, all through view.get/put/delete."""

    tables = _tables("rows")

    async def on_placed(self, event: dict[str, Any], view: ProjectionView) -> None:
        o, _, _ = type(self).tables
        view.put(o, {"order_id": event["order_id"], "lines": 0, "total": 0})

    async def on_line(self, event: dict[str, Any], view: ProjectionView) -> None:
        o, by_amount, g = type(self).tables
        order = await view.get(o, event["order_id"])
        assert order is not None, "a line before its order"
        view.put(o, {"order_id": order["order_id"], "lines": order["lines"] + 1})  # partial
        order = await view.get(o.name, order["order_id"])  # by declared name, merged
        assert order is not None
        view.put(o, {**order, "total": order["total"] + event["amount"], "note": "lines"})
        key = (event["order_id"], event["amount"])
        same = (await view.get(by_amount, key)) or {"n": 0}
        view.put(by_amount, {"order_id": key[0], "amount": key[1], "n": same["n"] + 1})
        total = await view.get(g, 1)
        view.put(g, {"id": 1, "total": (total or {"total": 0})["total"] + event["amount"]})

    async def on_cancelled(self, event: dict[str, Any], view: ProjectionView) -> None:
        o, by_amount, g = type(self).tables
        order = await view.get(o, event["order_id"])
        if order is None:
            return
        view.delete(o, event["order_id"])
        for amount in event["amounts"]:
            view.delete(by_amount, (event["order_id"], amount))
        total = await view.get(g, 1)
        assert total is not None
        view.put(g, {"id": 1, "total": total["total"] - order["total"]})


class RowReference(RowTotals):
    """The same projection built live from the start and never rebuilt."""

    tables = _tables("rows_ref")


LISTEN = {PLACED: "on_placed", LINE: "on_line", CANCELLED: "on_cancelled"}


def _module() -> Module:
    m = Module("rows")
    m.event(PLACED, LINE, CANCELLED)
    m.projection(RowTotals, listen=LISTEN)
    m.projection(RowReference, listen=LISTEN)
    return m


class Model:
    """What the tables must hold, kept in Python from the events published."""

    def __init__(self) -> None:
        self.orders: dict[str, tuple[int, int, str]] = {}
        self.by_amount: dict[tuple[str, int], int] = {}
        self.grand = 0
        self.amounts: dict[str, list[int]] = {}

    async def place(self, app: Application, order_id: str, lines: list[int]) -> None:
        await app.publish(PLACED, {"order_id": order_id}, key=order_id)
        self.orders[order_id] = (0, 0, "new")
        self.amounts[order_id] = []
        for amount in lines:
            await app.publish(LINE, {"order_id": order_id, "amount": amount}, key=order_id)
            n, total, _ = self.orders[order_id]
            self.orders[order_id] = (n + 1, total + amount, "lines")
            self.by_amount[order_id, amount] = self.by_amount.get((order_id, amount), 0) + 1
            self.grand += amount
            self.amounts[order_id].append(amount)

    async def cancel(self, app: Application, order_id: str) -> None:
        amounts = sorted(set(self.amounts[order_id]))
        await app.publish(CANCELLED, {"order_id": order_id, "amounts": amounts}, key=order_id)
        self.grand -= self.orders.pop(order_id)[1]
        for amount in amounts:
            del self.by_amount[order_id, amount]

    def expected(self) -> tuple[list[Any], list[Any], list[Any]]:
        return (
            sorted((k, *v) for k, v in self.orders.items()),
            sorted((*k, n) for k, n in self.by_amount.items()),
            [(1, self.grand)] if self.grand or self.orders else [],
        )


async def _contents(
    app: Application, projection: type[Projection]
) -> tuple[list[Any], list[Any], list[Any]]:
    async with app.projections.read(projection) as view:
        o, by_amount, g = (view.table(t) for t in projection.tables)
        return (
            sorted(tuple(r) for r in (await view.session.execute(select(o))).all()),
            sorted(tuple(r) for r in (await view.session.execute(select(by_amount))).all()),
            sorted(tuple(r) for r in (await view.session.execute(select(g))).all()),
        )


async def _history(app: Application, model: Model, n: int, prefix: str = "o") -> None:
    for i in range(n):
        await model.place(app, f"{prefix}{i:03}", [i % 3 + 1, 2, i % 3 + 1])
        if i % 4 == 1:
            await model.cancel(app, f"{prefix}{i:03}")
        if i % 8 == 1:  # the same id again: a delete then a put of one key in one batch
            await model.place(app, f"{prefix}{i:03}", [5])


async def test_rows_written_live_and_by_a_rebuild_equal_the_model(
    any_db: str, make_app: AppFactory
) -> None:
    model = Model()
    async with make_app(any_db, [_module()]) as app:
        await _history(app, model, 12)
        await app.drain()
        assert await _contents(app, RowTotals) == model.expected()
        async with keep_placing(lambda n: model.place(app, f"w{n:03}", [n % 2 + 1])) as written:
            result = await app.projections.rebuild(RowTotals, batch_size=7)
        assert written.placed > 0
        await _history(app, model, 3, prefix="after")
        await app.drain()
        assert result.generation == 2
        assert await _contents(app, RowTotals) == model.expected()
        assert await _contents(app, RowReference) == model.expected()


async def test_a_resumed_rebuild_reads_back_the_rows_it_wrote(
    any_db: str, make_app: AppFactory
) -> None:
    model = Model()

    class Interrupt(Exception):
        pass

    seen: list[RebuildProgress] = []

    def progress(p: RebuildProgress) -> None:
        seen.append(p)
        if len(seen) == 2:
            raise Interrupt

    async with make_app(any_db, [_module()]) as app:
        await _history(app, model, 10)
        await app.drain()
        with pytest.raises(Interrupt):
            await app.projections.rebuild(RowTotals, batch_size=9, progress=progress)
        await _history(app, model, 2, prefix="between")
        result = await app.projections.resume(RowTotals, batch_size=9)
        await app.drain()
        assert result.generation == 2 and result.applied < seen[-1].head
        assert await _contents(app, RowTotals) == model.expected()


async def test_a_cache_over_its_limit_reads_the_database_again(
    any_db: str, make_app: AppFactory
) -> None:
    _, by_amount, _ = RowReference.tables
    async with make_app(any_db, [_module()]) as app:
        rows = RowCache(app.database.dialect, known_empty=True, limit=2)
        async with app.database.session() as session, session.begin():
            for amount in (1, 2, 3):
                rows.put(by_amount, {"order_id": "x", "amount": amount, "n": amount})
            assert await rows.get(session, by_amount, ("x", 2)) == {
                "order_id": "x",
                "amount": 2,
                "n": 2,
            }
            await rows.flush(session)  # 3 rows kept > limit 2: forgotten, in the database
            rows.put(by_amount, {"order_id": "x", "amount": 2, "n": 20})  # a partial merge
            assert await rows.get(session, by_amount, ("x", 3)) == {
                "order_id": "x",
                "amount": 3,
                "n": 3,
            }
            assert (await rows.get(session, by_amount, ("x", 2)) or {})["n"] == 20
            rows.delete(by_amount, ("x", 1))
            await rows.flush(session)
        async with app.database.connect() as conn:
            stored = (await conn.execute(select(by_amount).order_by(by_amount.c.amount))).all()
        assert [tuple(r) for r in stored] == [("x", 2, 20), ("x", 3, 3)]


async def test_rows_put_without_being_read_update_or_insert_the_columns_named(
    any_db: str, make_app: AppFactory
) -> None:
    """A live handler may put some columns of a row it did not read: an existing row keeps
    its other (NOT NULL) columns, an absent one gets the columns' defaults."""
    o, _, _ = RowReference.tables
    async with make_app(any_db, [_module()]) as app:
        async with app.database.session() as session, session.begin():
            rows = RowCache(app.database.dialect, known_empty=True)
            rows.put(o, {"order_id": "a", "lines": 3, "total": 30, "note": "full"})
            await rows.flush(session)
        async with app.database.session() as session, session.begin():
            rows = RowCache(app.database.dialect, lock=True)
            rows.put(o, {"order_id": "a", "note": "renamed"})  # exists: an UPDATE of note
            rows.put(o, {"order_id": "b", "lines": 1, "total": 2})  # absent: note defaults
            rows.put(o, {"order_id": "a"})  # the key alone of an existing row: nothing
            await rows.flush(session)
            assert await rows.get(session, o, "a") == {
                "order_id": "a",
                "lines": 3,
                "total": 30,
                "note": "renamed",
            }
        async with app.database.connect() as conn:
            stored = (await conn.execute(select(o).order_by(o.c.order_id))).all()
        assert [tuple(r) for r in stored] == [("a", 3, 30, "renamed"), ("b", 1, 2, "new")]


async def test_misuse_of_rows_fails_clearly(sqlite_db: str, make_app: AppFactory) -> None:
    o, by_amount, _ = RowTotals.tables
    rows = RowCache("sqlite")
    with pytest.raises(UsageError, match="has no column 'size'; its columns are order_id"):
        rows.put(o, {"order_id": "a", "size": 1})
    with pytest.raises(UsageError, match="needs the primary key column"):
        rows.put(by_amount, {"order_id": "a", "n": 1})
    with pytest.raises(UsageError, match=r"primary key is \(order_id, amount\): give a tuple"):
        rows.delete(by_amount, "a")
    with pytest.raises(UsageError, match="as a mapping"):
        rows.put(o, [("order_id", "a")])  # type: ignore[arg-type]
    async with make_app(sqlite_db, [_module()]) as app, app.projections.read(RowTotals) as view:
        assert await view.get(o, "missing") is None
        with pytest.raises(UsageError, match=r"readers .* cannot write"):
            view.put(o, {"order_id": "a", "lines": 0, "total": 0})
        with pytest.raises(UsageError, match="not one of this projection's tables"):
            await view.get(RowReference.tables[0], "a")
