"""Modules bind listeners by name; the context chains follow-up commands and dedupes them."""

from __future__ import annotations

import abc
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert

from dddframe import (
    Application,
    DomainEvent,
    Envelope,
    EventContext,
    LimitRetry,
    Module,
    inject,
)
from dddframe.bus.inprocess import InProcessBus
from dddframe.errors import ConfigurationError, MissingBinding
from dddframe.outbox.records import envelope_to_row
from dddframe.outbox.tables import outbox_table
from dddframe.testing import FaultInjector
from tests.core.conftest import AppFactory, outbox_rows
from tests.core.model import (
    Account,
    AddLine,
    CartCheckedOut,
    Checkout,
    Deposit,
    OpenAccount,
    OpenCart,
    shopping_module,
)


class Journal:
    def __init__(self) -> None:
        self.entries: list[Any] = []


class Rewards(abc.ABC):
    @abc.abstractmethod
    def points(self, total: Decimal) -> int: ...


class TenPercent(Rewards):
    def points(self, total: Decimal) -> int:
        return int(total / 10)


class LoyaltyController:
    @inject
    def __init__(self, journal: Journal, rewards: Rewards) -> None:
        self.journal = journal
        self.rewards = rewards

    async def on_checked_out(self, event: CartCheckedOut, ctx: EventContext) -> None:
        self.journal.entries.append(("checked_out", event.total, ctx.envelope))
        account_id = uuid.UUID(ctx.headers["x-account"])
        await ctx.run(Deposit(account_id=account_id, amount=self.rewards.points(event.total)))

    async def on_deposited(self, event: dict[str, Any], ctx: EventContext) -> None:
        self.journal.entries.append(("deposited", event["amount"], ctx.envelope))

    async def on_raw(self, event: Envelope) -> None:
        self.journal.entries.append(("raw", event.name, event))


def loyalty(journal: Journal, *, bind_rewards: bool = True) -> Module:
    m = Module("loyalty")
    m.bind(Journal, to=journal)
    if bind_rewards:
        m.bind(Rewards, to=TenPercent)
    m.controller(LoyaltyController)
    m.listen("Core:CartCheckedOut", "LoyaltyController.on_checked_out")
    m.listen("Core:Deposited", "LoyaltyController.on_deposited")
    return m


async def _checkout(app: Application, account_id: uuid.UUID) -> uuid.UUID:
    cart_id: uuid.UUID = await app.engine.run(OpenCart())
    await app.engine.run(AddLine(cart_id=cart_id, sku="A", price=Decimal("120")))
    await app.engine.run(Checkout(cart_id=cart_id), headers={"x-account": str(account_id)})
    return cart_id


async def test_follow_up_commands_chain_correlation_and_causation(
    any_db: str, make_app: AppFactory
) -> None:
    journal = Journal()
    async with make_app(any_db, [shopping_module(), loyalty(journal)]) as app:
        account_id = await app.engine.run(OpenAccount())
        await _checkout(app, account_id)
        await app.drain()
        rows = await outbox_rows(app)
    kinds = [(k, v) for k, v, _ in journal.entries]
    assert kinds == [("checked_out", Decimal(120)), ("deposited", 12)]
    checked_out_env = journal.entries[0][2]
    deposited_env = journal.entries[1][2]
    assert deposited_env.causation_id == str(checked_out_env.event_id)
    assert deposited_env.correlation_id == checked_out_env.correlation_id
    assert sum(1 for r in rows if r.name == "Core:Deposited") == 1


async def test_redelivered_event_does_not_run_its_command_twice(
    sqlite_db: str, make_app: AppFactory
) -> None:
    journal = Journal()
    faults = FaultInjector().deliver_twice()
    bus = InProcessBus(poll_interval=0.05, faults=faults)
    async with make_app(sqlite_db, [shopping_module(), loyalty(journal)], bus=bus) as app:
        account_id = await app.engine.run(OpenAccount())
        await _checkout(app, account_id)
        await app.drain()
        async with app.database.session() as s:
            account = await s.get(Account, account_id)
    assert account is not None
    assert account.balance == 12  # the listener ran twice, the inbox kept one deposit
    assert [k for k, *_ in journal.entries].count("checked_out") == 2


async def test_injected_failures_are_retried(sqlite_db: str, make_app: AppFactory) -> None:
    journal = Journal()
    faults = FaultInjector()
    bus = InProcessBus(poll_interval=0.05, faults=faults, retry=LimitRetry(limit=3, delay=0.01))
    async with make_app(sqlite_db, [shopping_module(), loyalty(journal)], bus=bus) as app:
        account_id = await app.engine.run(OpenAccount())
        faults.fail_next(2)
        await _checkout(app, account_id)
        await app.drain()
        assert await app.dead_letters.list() == []
    assert faults.injected_failures == 2
    assert [k for k, *_ in journal.entries] == ["checked_out", "deposited"]


async def test_startup_rejects_misspelled_bindings_with_close_matches(sqlite_db: str) -> None:
    cases = [
        (
            "Core:CartChekedOut",
            "LoyaltyController.on_checked_out",
            "Did you mean 'Core:CartCheckedOut'",
        ),
        (
            "Core:CartCheckedOut",
            "LoyaltyControler.on_checked_out",
            "Did you mean 'LoyaltyController'",
        ),
        ("Core:CartCheckedOut", "LoyaltyController.on_checkedout", "Did you mean 'on_checked_out'"),
        ("Core:Deposited", "LoyaltyController.on_checked_out", "not the class of 'Core:Deposited'"),
    ]
    for event, target, expected in cases:
        m = Module("loyalty")
        m.bind(Journal, to=Journal())
        m.bind(Rewards, to=TenPercent)
        m.controller(LoyaltyController)
        m.listen(event, target)
        app = Application([shopping_module(), m], database_url=sqlite_db)
        with pytest.raises(ConfigurationError, match=expected):
            await app.start()


async def test_missing_binding_is_reported_at_start(sqlite_db: str) -> None:
    app = Application([shopping_module(), loyalty(Journal(), bind_rewards=False)], sqlite_db)
    with pytest.raises(MissingBinding, match="Rewards"):
        await app.start()


def test_bad_listen_arguments_are_rejected() -> None:
    m = Module("m")
    with pytest.raises(ConfigurationError, match=r"Controller\.method"):
        m.listen("Core:Deposited", "on_deposited")
    with pytest.raises(ConfigurationError, match="block_aggregate"):
        m.listen("Core:Deposited", "A.b", dead_letter="drop")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="identifier"):
        Module("no spaces")


def test_two_classes_cannot_claim_one_event_name() -> None:
    with pytest.raises(ConfigurationError, match="claimed by both"):

        class Impostor(DomainEvent):
            __event_name__ = "Core:CartOpened"


async def test_upcaster_turns_old_payloads_into_the_current_shape(
    sqlite_db: str, make_app: AppFactory
) -> None:
    journal = Journal()
    m = loyalty(journal)
    m.listen("Core:CartCheckedOut", "LoyaltyController.on_raw", group="audit")

    @m.upcaster("Core:CartCheckedOut", from_version=1)
    def add_currency(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "currency": "EUR"}

    async with make_app(sqlite_db, [shopping_module(), m]) as app:
        account_id = await app.engine.run(OpenAccount())
        old = Envelope.new(
            "Core:CartCheckedOut",
            json.dumps({"cart_id": str(uuid.uuid4()), "total": "30"}),
            aggregate_type="Cart",
            aggregate_id=str(uuid.uuid4()),
            aggregate_version=1,
            event_version=1,
            headers={"x-account": str(account_id)},
        )
        async with app.database.engine.begin() as conn:
            await conn.execute(insert(outbox_table), [envelope_to_row(old)])
        app.bus.notify([old])
        await app.drain()
        assert await app.dead_letters.list() == []
    checked = [e for e in journal.entries if e[0] == "checked_out"]
    assert checked[0][1] == Decimal(30)
    raw = [e for e in journal.entries if e[0] == "raw"]
    assert raw[0][2].event_version == 1  # raw listeners see the stored envelope


async def test_middleware_wraps_every_call_in_order(sqlite_db: str, make_app: AppFactory) -> None:
    journal = Journal()
    calls: list[str] = []

    async def outer(ctx: EventContext, call_next: Any) -> None:
        calls.append(f"outer>{ctx.envelope.name}")
        await call_next()
        calls.append("outer<")

    m = loyalty(journal)

    @m.middleware
    async def inner(ctx: EventContext, call_next: Any) -> None:
        calls.append(f"inner attempt={ctx.attempt}")
        await call_next()

    async with make_app(sqlite_db, [shopping_module(), m], middleware=[outer]) as app:
        account_id = await app.engine.run(OpenAccount())
        await app.engine.run(Deposit(account_id=account_id, amount=1))
        await app.drain()
    assert calls == ["outer>Core:Deposited", "inner attempt=1", "outer<"]


async def test_traceparent_of_the_active_span_is_stored(
    sqlite_db: str, make_app: AppFactory
) -> None:
    from opentelemetry import context, trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    span_context = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=False,
        trace_flags=TraceFlags(1),
    )
    async with make_app(sqlite_db, [shopping_module()]) as app:
        account_id = await app.engine.run(OpenAccount())
        token = context.attach(trace.set_span_in_context(NonRecordingSpan(span_context)))
        try:
            await app.engine.run(Deposit(account_id=account_id, amount=1))
        finally:
            context.detach(token)
        rows = await outbox_rows(app)
    headers = json.loads(rows[-1].headers)
    assert headers["traceparent"] == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_direct_messages_join_the_unit_of_work(sqlite_db: str, make_app: AppFactory) -> None:
    journal = Journal()
    m = loyalty(journal)
    m.event("Core:Notice")
    m.listen("Core:Notice", "LoyaltyController.on_raw", group="notices")
    async with make_app(sqlite_db, [shopping_module(), m]) as app:
        env = await app.publish("Core:Notice", {"text": "hello"}, key="k1")
        await app.drain()
        rows = await outbox_rows(app)
    assert [r.name for r in rows] == ["Core:Notice"]
    assert journal.entries[0][2].event_id == env.event_id
    assert journal.entries[0][2].payload() == {"text": "hello"}
