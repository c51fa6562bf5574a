"""A small domain for the core tests: carts with lines (entities) and accounts."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dddframe import Aggregate, Command, DomainEvent, Entity, Module, Repository
from dddframe.errors import DomainError


class CartOpened(DomainEvent):
    __event_name__ = "Core:CartOpened"
    cart_id: uuid.UUID


class LineAdded(DomainEvent):
    __event_name__ = "Core:LineAdded"
    cart_id: uuid.UUID
    sku: str
    price: Decimal


class LinePriced(DomainEvent):
    __event_name__ = "Core:LinePriced"
    sku: str
    price: Decimal


class CartCheckedOut(DomainEvent):
    __event_name__ = "Core:CartCheckedOut"
    __event_version__ = 2
    cart_id: uuid.UUID
    total: Decimal
    currency: str


class CartEmpty(DomainError):
    pass


class CartLine(Entity):
    __tablename__ = "core_cart_lines"
    id: Mapped[int] = mapped_column(primary_key=True)
    cart_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("core_carts.id"))
    sku: Mapped[str] = mapped_column(String(64))
    price: Mapped[Decimal]

    def reprice(self, price: Decimal) -> None:
        self.price = price
        self.domain_event(LinePriced(sku=self.sku, price=price))


class Cart(Aggregate):
    __tablename__ = "core_carts"
    status: Mapped[str] = mapped_column(String(16), default="open")
    lines: Mapped[list[CartLine]] = relationship(cascade="all, delete-orphan")

    @classmethod
    def open(cls) -> Cart:
        cart = cls(status="open", lines=[])
        cart.domain_event(CartOpened(cart_id=cart.id))
        return cart

    def add(self, sku: str, price: Decimal) -> None:
        self.lines.append(CartLine(sku=sku, price=price))
        self.domain_event(LineAdded(cart_id=self.id, sku=sku, price=price))

    @property
    def total(self) -> Decimal:
        return sum((line.price for line in self.lines), Decimal(0))

    def checkout(self) -> None:
        if not self.lines:
            raise CartEmpty(f"cart {self.id} has no lines; add one before checking out")
        self.status = "checked_out"
        self.domain_event(CartCheckedOut(cart_id=self.id, total=self.total, currency="EUR"))


class Account(Aggregate):
    __tablename__ = "core_accounts"
    balance: Mapped[int] = mapped_column(default=0)

    def deposit(self, amount: int) -> None:
        self.balance += amount
        self.domain_event("Core:Deposited", {"amount": amount, "balance": self.balance})


class OpenCart(Command):
    pass


class AddLine(Command):
    cart_id: uuid.UUID
    sku: str
    price: Decimal


class RepriceLines(Command):
    cart_id: uuid.UUID
    price: Decimal


class Checkout(Command):
    cart_id: uuid.UUID


class OpenAccount(Command):
    pass


class Deposit(Command):
    account_id: uuid.UUID
    amount: int
    fail_after: bool = False


def shopping_module() -> Module:
    m = Module("shopping")
    m.event("Core:Deposited")

    @m.handles(OpenCart)
    async def open_cart(cmd: OpenCart, carts: Repository[Cart]) -> uuid.UUID:
        cart = Cart.open()
        carts.add(cart)
        return cart.id

    @m.handles(AddLine)
    async def add_line(cmd: AddLine, carts: Repository[Cart]) -> None:
        cart = await carts.get(cmd.cart_id)
        cart.add(cmd.sku, cmd.price)

    @m.handles(RepriceLines)
    async def reprice(cmd: RepriceLines, carts: Repository[Cart]) -> None:
        cart = await carts.get(cmd.cart_id)
        for line in cart.lines:
            line.reprice(cmd.price)

    @m.handles(Checkout)
    async def checkout(cmd: Checkout, carts: Repository[Cart]) -> None:
        cart = await carts.get(cmd.cart_id)
        cart.checkout()

    @m.handles(OpenAccount)
    async def open_account(cmd: OpenAccount, accounts: Repository[Account]) -> uuid.UUID:
        account = Account()
        accounts.add(account)
        return account.id

    @m.handles(Deposit)
    async def deposit(cmd: Deposit, accounts: Repository[Account]) -> int:
        account = await accounts.get(cmd.account_id)
        account.deposit(cmd.amount)
        if cmd.fail_after:
            raise RuntimeError("handler failed after recording the event")
        return account.balance

    return m
