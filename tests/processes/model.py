"""A small fulfilment process for the process-manager tests: an order is placed, stock is
reserved, payment is awaited under a timer, then the order ships or is cancelled."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from dddframe import (
    Aggregate,
    Application,
    Command,
    DomainEvent,
    Module,
    NoRetry,
    ProcessContext,
    ProcessManager,
    Repository,
)


class PmPlaced(DomainEvent):
    __event_name__ = "Pm:Placed"
    order_id: str
    payment_seconds: float = 3600.0


class PmCharged(DomainEvent):
    __event_name__ = "Pm:Charged"
    order_id: str


class PmTicked(DomainEvent):
    __event_name__ = "Pm:Ticked"
    order_id: str
    n: int


class PmOrder(Aggregate):
    __tablename__ = "pm_orders"
    order_id: Mapped[str] = mapped_column(String(64))

    def place(self, payment_seconds: float) -> None:
        self.domain_event(PmPlaced(order_id=self.order_id, payment_seconds=payment_seconds))

    def charge(self) -> None:
        self.domain_event(PmCharged(order_id=self.order_id))

    def tick(self, n: int) -> None:
        self.domain_event(PmTicked(order_id=self.order_id, n=n))


class PmLedger(Aggregate):
    """One aggregate whose events feed many process instances (ticks for several orders)."""

    __tablename__ = "pm_ledgers"

    def note(self, ticks: list[tuple[str, int]]) -> None:
        for order_id, n in ticks:
            self.domain_event(PmTicked(order_id=order_id, n=n))


class Effect(Aggregate):
    """One row per command that took effect: (what, order_id)."""

    __tablename__ = "pm_effects"
    what: Mapped[str] = mapped_column(String(32))
    order_id: Mapped[str] = mapped_column(String(64))


class Place(Command):
    order_id: str
    payment_seconds: float = 3600.0


class Charge(Command):
    aggregate_id: uuid.UUID


class Tick(Command):
    aggregate_id: uuid.UUID
    n: int


class Note(Command):
    """Ticks for several orders from one new ledger aggregate, in this order."""

    ticks: list[tuple[str, int]]


class Record(Command):
    what: str
    order_id: str


class Deadlines:
    """A service steps get from the application's injector (auto-bound: a plain class)."""

    factor = 1.0


FAILING_TIMEOUTS: set[str] = set()  # instances whose payment timeout step raises
FAILING_TICKS: set[int] = {666}  # tick numbers whose step raises


class Fulfilment(ProcessManager):
    __tablename__ = "pm_fulfilments"
    state: Mapped[str] = mapped_column(String(32), default="new")
    ticks: Mapped[int] = mapped_column(default=0)
    trail: Mapped[str] = mapped_column(String(400), default="")  # what ran, in order

    def on_placed(self, event: PmPlaced, ctx: ProcessContext, deadlines: Deadlines) -> None:
        self.state = "awaiting_payment"
        ctx.send(Record(what="reserve", order_id=event.order_id))
        self.timeout("payment", after=timedelta(seconds=event.payment_seconds * deadlines.factor))

    async def on_charged(self, event: PmCharged, ctx: ProcessContext) -> None:
        self.state = "shipped"
        self.cancel_timeout("payment")
        ctx.send(Record(what="ship", order_id=event.order_id))
        self.complete()

    def on_ticked(self, event: PmTicked, ctx: ProcessContext) -> None:
        self.ticks += 1
        self.trail += f"{event.n},"
        if event.n in FAILING_TICKS:
            raise RuntimeError(f"this step fails (tick {event.n})")
        if event.n < 0:  # a negative tick means "stop waiting for the payment"
            self.cancel_timeout("payment")
        ctx.send(Record(what=f"tick-{event.n}", order_id=event.order_id))

    def on_payment_timeout(self, ctx: ProcessContext) -> None:
        if self.id in FAILING_TIMEOUTS:
            raise RuntimeError(f"the payment timeout of {self.id} fails")
        self.state = "cancelled"
        self.trail += "timeout,"
        ctx.send(Record(what="cancel", order_id=self.id))
        self.complete()


def fulfilment_module(**process_options: object) -> Module:
    m = Module("fulfilment")

    @m.handles(Place)
    async def place(cmd: Place, orders: Repository[PmOrder]) -> uuid.UUID:
        order = PmOrder(order_id=cmd.order_id)
        order.place(cmd.payment_seconds)
        orders.add(order)
        return order.id

    @m.handles(Charge)
    async def charge(cmd: Charge, orders: Repository[PmOrder]) -> None:
        (await orders.get(cmd.aggregate_id)).charge()

    @m.handles(Tick)
    async def tick(cmd: Tick, orders: Repository[PmOrder]) -> None:
        (await orders.get(cmd.aggregate_id)).tick(cmd.n)

    @m.handles(Note)
    async def note(cmd: Note, ledgers: Repository[PmLedger]) -> uuid.UUID:
        ledger = PmLedger()
        ledger.note(cmd.ticks)
        ledgers.add(ledger)
        return ledger.id

    @m.handles(Record)
    async def record(cmd: Record, effects: Repository[Effect]) -> None:
        effects.add(Effect(what=cmd.what, order_id=cmd.order_id))

    m.process(
        Fulfilment,
        correlate_by="order_id",
        starts_with="Pm:Placed",
        listen={"Pm:Placed": "on_placed", "Pm:Charged": "on_charged", "Pm:Ticked": "on_ticked"},
        timeouts=["payment"],
        **process_options,  # type: ignore[arg-type]
    )
    return m


URL_ENV = "DDDFRAME_PM_TEST_URL"


def make_app(consume: bool = True) -> Application:
    """The fulfilment process for CLI tests (``--app tests.processes.model:make_app``): no
    retries, the database from ``DDDFRAME_PM_TEST_URL``."""
    return Application([fulfilment_module(retry=NoRetry())], os.environ[URL_ENV], consume=consume)
