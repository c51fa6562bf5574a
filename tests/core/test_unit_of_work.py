"""One command = one transaction: aggregate rows, version checks and outbox rows together."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import select

from dddframe import Command, Module, Repository
from dddframe.engine import UnitOfWork
from dddframe.errors import (
    CommandValidationError,
    EventSerializationError,
    NotFound,
    UnknownCommand,
)
from dddframe.outbox.tables import outbox_table
from tests.core.conftest import AppFactory, count, outbox_rows
from tests.core.model import (
    Account,
    AddLine,
    Cart,
    CartEmpty,
    Checkout,
    Deposit,
    OpenAccount,
    OpenCart,
    RepriceLines,
    shopping_module,
)


async def test_commit_writes_one_outbox_row_per_event_in_recording_order(
    any_db: str, make_app: AppFactory
) -> None:
    async with make_app(any_db, [shopping_module()]) as app:
        cart_id = await app.engine.run(OpenCart())
        await app.engine.run(AddLine(cart_id=cart_id, sku="A", price=Decimal("2.50")))
        await app.engine.run(AddLine(cart_id=cart_id, sku="B", price=Decimal("1.25")))
        await app.engine.run(RepriceLines(cart_id=cart_id, price=Decimal("3")))
        await app.engine.run(Checkout(cart_id=cart_id))
        rows = await outbox_rows(app)
        async with app.database.session() as s:
            cart = await s.get(Cart, cart_id)
            assert cart is not None
            version = cart.version
    names = [r.name for r in rows]
    assert names == [
        "Core:CartOpened",
        "Core:LineAdded",
        "Core:LineAdded",
        "Core:LinePriced",  # recorded by entities, belongs to the root
        "Core:LinePriced",
        "Core:CartCheckedOut",
    ]
    assert {r.aggregate_id for r in rows} == {str(cart_id)}
    assert {r.aggregate_type for r in rows} == {"Cart"}
    # every event has its own per-aggregate sequence, and the version ends at the last one
    assert [r.aggregate_version for r in rows] == [1, 2, 3, 4, 5, 6]
    assert version == 6
    checkout = rows[-1]
    assert checkout.event_version == 2
    assert Decimal(json.loads(checkout.payload)["total"]) == Decimal(6)  # a JSON string
    headers = json.loads(checkout.headers)
    assert uuid.UUID(headers["correlation_id"])
    assert len({r.event_id for r in rows}) == 6


async def test_handler_exception_rolls_back_rows_and_events(
    any_db: str, make_app: AppFactory
) -> None:
    async with make_app(any_db, [shopping_module()]) as app:
        account_id = await app.engine.run(OpenAccount())
        before = await outbox_rows(app)
        with pytest.raises(RuntimeError, match="handler failed"):
            await app.engine.run(Deposit(account_id=account_id, amount=5, fail_after=True))
        after = await outbox_rows(app)
        async with app.database.session() as s:
            account = await s.get(Account, account_id)
        assert account is not None and account.balance == 0 and account.version == 1
        assert after == before

        with pytest.raises(CartEmpty, match="no lines"):
            cart_id = await app.engine.run(OpenCart())
            await app.engine.run(Checkout(cart_id=cart_id))
        assert [r.name for r in await outbox_rows(app)][-1] == "Core:CartOpened"


async def test_rolled_back_new_aggregate_leaves_no_row(
    sqlite_db: str, make_app: AppFactory
) -> None:
    m = Module("failing")

    @m.handles(OpenCart)
    async def open_and_fail(cmd: OpenCart, carts: Repository[Cart]) -> None:
        carts.add(Cart.open())
        raise RuntimeError("boom")

    async with make_app(sqlite_db, [m]) as app:
        with pytest.raises(RuntimeError):
            await app.engine.run(OpenCart())
        assert await count(app.database, Cart.__table__) == 0
        assert await count(app.database, outbox_table) == 0


async def test_clear_errors_and_nothing_written(sqlite_db: str, make_app: AppFactory) -> None:
    class Unhandled(Command):
        pass

    async with make_app(sqlite_db, [shopping_module()]) as app:
        with pytest.raises(UnknownCommand, match="No module handles Unhandled"):
            await app.engine.run(Unhandled())
        with pytest.raises(CommandValidationError, match="amount"):
            await app.engine.run(Deposit, {"account_id": str(uuid.uuid4()), "amount": "lots"})
        with pytest.raises(NotFound, match="No Account with id"):
            await app.engine.run(Deposit(account_id=uuid.uuid4(), amount=1))
        account_id = await app.engine.run(OpenAccount())

        class NotJson:
            pass

        async with app.database.session() as s:
            account = await s.get(Account, account_id)
            assert account is not None
            with pytest.raises(EventSerializationError, match="cannot be serialised"):
                account.domain_event("Core:Deposited", {"amount": NotJson()})
            with pytest.raises(EventSerializationError, match="header values must be str"):
                account.domain_event("Core:Deposited", {}, headers={"n": 1})  # type: ignore[dict-item]
        assert len(await outbox_rows(app)) == 0


async def test_events_stay_on_the_aggregate_until_commit(
    sqlite_db: str, make_app: AppFactory
) -> None:
    async with make_app(sqlite_db, [shopping_module()]) as app:
        cart = Cart.open()
        assert [e.name for e in cart.pending_events] == ["Core:CartOpened"]
        async with app.database.session() as s:
            uow = UnitOfWork(s, {})
            uow.repository(Cart).add(cart)
            envelopes = await uow.commit()
        assert [e.name for e in envelopes] == ["Core:CartOpened"]
        assert cart.pending_events == []
        async with app.database.session() as s:
            found = (await s.scalars(select(Cart))).all()
        assert [c.id for c in found] == [cart.id]
