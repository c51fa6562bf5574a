"""A tiny application for the operator tests: tickets whose notifier can be made to fail."""

from __future__ import annotations

import os
import uuid

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from dddframe import Aggregate, Application, Command, DomainEvent, Module, NoRetry, Repository
from dddframe.bus.inprocess import InProcessBus

URL_ENV = "DDDFRAME_OPS_TEST_URL"


class TicketOpened(DomainEvent):
    __event_name__ = "Ops:TicketOpened"
    ticket_id: uuid.UUID
    title: str


class Ticket(Aggregate):
    __tablename__ = "ops_tickets"
    title: Mapped[str] = mapped_column(String(200))

    @classmethod
    def open(cls, title: str) -> Ticket:
        ticket = cls(id=uuid.uuid4(), title=title)
        ticket.domain_event(TicketOpened(ticket_id=ticket.id, title=title))
        return ticket


class OpenTicket(Command):
    title: str


class Notifier:
    """Fails for titles starting with "boom" while ``broken`` is set (a mail server down)."""

    broken = True
    seen: list[str] = []

    async def on_opened(self, event: TicketOpened) -> None:
        if event.title.startswith("boom") and Notifier.broken:
            raise RuntimeError(f"mail server down for {event.title}")
        Notifier.seen.append(event.title)


ops = Module("ops")
ops.controller(Notifier)
ops.listen("Ops:TicketOpened", "Notifier.on_opened", retry=NoRetry())


@ops.handles(OpenTicket)
async def open_ticket(cmd: OpenTicket, tickets: Repository[Ticket]) -> uuid.UUID:
    ticket = Ticket.open(cmd.title)
    tickets.add(ticket)
    return ticket.id


def make_app(consume: bool = True) -> Application:
    """The factory ``--app tests.ops.ops_app:make_app`` loads; the URL comes from the env."""
    return Application(
        modules=[ops],
        database_url=os.environ[URL_ENV],
        bus=InProcessBus(poll_interval=0.05),
        consume=consume,
    )
