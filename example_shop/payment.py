"""Payment: charges the order's total with an external provider once its stock is reserved.

On the database bus the charge uses a half message: ``Payment:Charged`` is stored *prepared*
before the provider is called and committed once it accepted, so a crash in between is decided
by the tx_checker (which asks the provider) instead of losing or inventing the event. On other
buses the outcome is recorded by a plain command after the call. Either way the provider gets
the order id as idempotency key, so a redelivered event never charges twice, and an unreachable
provider is an ordinary listener failure that the retry policy carries through. A charge that
lands on an order cancelled meanwhile comes back as ``Order:RefundDue`` and is refunded.
"""

from __future__ import annotations

import ssl
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated

import httpx
from injector import singleton
from pydantic import Field, StringConstraints
from sqlalchemy import Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from dddframe import (
    Aggregate,
    Application,
    Command,
    EventContext,
    ExponentialRetry,
    Module,
    Repository,
    inject,
)
from dddframe.errors import DomainError
from example_shop.events import (
    OrderRefundDue,
    PaymentCharged,
    PaymentDeclined,
    PaymentRefunded,
    StockReserved,
)
from example_shop.settings import ShopSettings

__all__ = [
    "Payment",
    "PaymentController",
    "PaymentError",
    "PaymentProvider",
    "PaymentUnavailable",
    "RecordPayment",
    "RefundPayment",
    "make_payment_module",
]


class PaymentError(DomainError):
    """A payment was recorded twice with different outcomes, or with a bad amount."""


class PaymentUnavailable(Exception):
    """The provider could not be reached or answered 5xx; the delivery is retried."""


class Payment(Aggregate):
    """The outcome of charging one order (id = the order's id)."""

    __tablename__ = "shop_payments"
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))  # charged | declined | refunded
    charge_id: Mapped[str | None] = mapped_column(String(64), default=None)
    reason: Mapped[str | None] = mapped_column(String(255), default=None)

    @classmethod
    def record(
        cls,
        order_id: uuid.UUID,
        amount: Decimal,
        currency: str,
        charge_id: str | None,
        declined: str | None,
        announce: bool,
    ) -> Payment:
        if amount <= 0:
            raise PaymentError(f"order {order_id}: amount must be positive, got {amount}")
        status = "declined" if declined is not None else "charged"
        payment = cls(
            id=order_id,
            amount=amount,
            currency=currency,
            status=status,
            charge_id=charge_id,
            reason=declined,
        )
        if declined is not None:
            payment.domain_event(PaymentDeclined(order_id=order_id, amount=amount, reason=declined))
        elif announce:
            payment.domain_event(PaymentCharged(order_id=order_id, amount=amount))
        return payment

    def refund(self) -> None:
        if self.status == "refunded":
            return
        if self.status != "charged":
            raise PaymentError(f"payment of order {self.id} is {self.status}; nothing to refund")
        self.status = "refunded"
        self.domain_event(PaymentRefunded(order_id=self.id, amount=self.amount))


@dataclass(frozen=True, slots=True)
class ChargeResult:
    charge_id: str
    declined: str | None  # the provider's reason, or None when the money was taken


class PaymentProvider:
    """HTTP client of the provider (see example_shop.payment_stub for the API); one per
    application."""

    @inject
    def __init__(self, settings: ShopSettings) -> None:
        self.url = settings.payment_url.rstrip("/")
        self.timeout = settings.payment_timeout
        self.currency = settings.currency
        # Building a TLS context costs ~30 ms; a client per request reuses this one.
        self._tls = ssl.create_default_context()

    async def charge(self, reference: str, amount: Decimal) -> ChargeResult:
        body = {"reference": reference, "amount": str(amount), "currency": self.currency}
        response = await self._request("POST", "/charges", body)
        data = response.json()
        if response.status_code == 201:
            return ChargeResult(str(data["id"]), None)
        if response.status_code == 402:
            return ChargeResult(str(data["id"]), str(data.get("reason") or "declined"))
        raise PaymentUnavailable(f"provider answered {response.status_code}: {response.text}")

    async def succeeded(self, reference: str) -> bool:
        response = await self._request("GET", f"/charges/{reference}", None)
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise PaymentUnavailable(f"provider answered {response.status_code}")
        return bool(response.json().get("status") == "succeeded")

    async def refund(self, reference: str) -> None:
        response = await self._request("POST", f"/charges/{reference}/refund", None)
        if response.status_code != 200:
            raise PaymentUnavailable(f"refund refused ({response.status_code}): {response.text}")

    async def _request(self, method: str, path: str, body: object) -> httpx.Response:
        try:
            async with httpx.AsyncClient(
                base_url=self.url, timeout=self.timeout, verify=self._tls
            ) as client:
                response = await client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise PaymentUnavailable(f"payment provider at {self.url} unreachable: {exc}") from exc
        if response.status_code >= 500:
            raise PaymentUnavailable(f"provider answered {response.status_code}: {response.text}")
        return response


class RecordPayment(Command):
    """What the provider answered; the fields fit the payments table's columns."""

    order_id: uuid.UUID
    amount: Annotated[Decimal, Field(max_digits=12, decimal_places=2)]
    currency: Annotated[str, StringConstraints(min_length=3, max_length=3)]
    charge_id: Annotated[str, StringConstraints(max_length=64)] | None = None
    declined: Annotated[str, StringConstraints(max_length=255)] | None = None
    announce: bool = True  # False when a half message announces the charge instead


async def record_payment(cmd: RecordPayment, payments: Repository[Payment]) -> str:
    known = await payments.find(cmd.order_id)
    if known is not None:
        return known.status  # a redelivered charge: the provider answered the same
    payment = Payment.record(
        cmd.order_id, cmd.amount, cmd.currency, cmd.charge_id, cmd.declined, cmd.announce
    )
    payments.add(payment)
    return payment.status


class RefundPayment(Command):
    order_id: uuid.UUID


async def refund_payment(cmd: RefundPayment, payments: Repository[Payment]) -> None:
    (await payments.get(cmd.order_id)).refund()


class PaymentController:
    @inject
    def __init__(self, app: Application, provider: PaymentProvider) -> None:
        self.app = app
        self.provider = provider

    async def on_stock_reserved(self, event: StockReserved, ctx: EventContext) -> None:
        reference = str(event.order_id)
        prepare = (
            getattr(self.app.bus, "prepare", None) if self.app.bus.name == "database" else None
        )
        if prepare is None:
            result = await self.provider.charge(reference, event.total)
            await ctx.run(self._record(event, result, announce=True))
            return
        charged = PaymentCharged(order_id=event.order_id, amount=event.total)
        causation = {"causation_id": ctx.event_id}
        async with prepare([charged], key=reference, headers=causation) as tx:
            result = await self.provider.charge(reference, event.total)
            if result.declined is not None:
                await tx.rollback()
            await ctx.run(self._record(event, result, announce=False))

    async def on_refund_due(self, event: OrderRefundDue, ctx: EventContext) -> None:
        await self.provider.refund(str(event.order_id))
        await ctx.run(RefundPayment(order_id=event.order_id))

    async def check_charge(self, event: PaymentCharged) -> bool:
        """tx_checker of a ``Payment:Charged`` half message left prepared by a crash."""
        return await self.provider.succeeded(str(event.order_id))

    def _record(self, event: StockReserved, result: ChargeResult, announce: bool) -> RecordPayment:
        return RecordPayment(
            order_id=event.order_id,
            amount=event.total,
            currency=self.provider.currency,
            charge_id=result.charge_id,
            # The provider's reason is its text: keep what the column holds.
            declined=None if result.declined is None else result.declined[:255],
            announce=announce,
        )


def make_payment_module(settings: ShopSettings) -> Module:
    """The payment context, configured with the provider and retry settings of ``settings``."""
    payment = Module("payment")
    payment.bind(ShopSettings, to=settings)
    payment.bind(PaymentProvider, to=PaymentProvider, scope=singleton)
    payment.command(RecordPayment, record_payment)
    payment.controller(PaymentController)
    # The provider being unreachable is transient: retry with backoff, then dead-letter.
    provider_retry = ExponentialRetry(
        base=settings.payment_retry_base, max_delay=30, limit=settings.payment_retry_limit
    )
    payment.listen(
        "Store:StockReserved", "PaymentController.on_stock_reserved", retry=provider_retry
    )
    payment.command(RefundPayment, refund_payment)
    payment.listen("Order:RefundDue", "PaymentController.on_refund_due", retry=provider_retry)
    payment.tx_checker("Payment:Charged", "PaymentController.check_charge")
    return payment
