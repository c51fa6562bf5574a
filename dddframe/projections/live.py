"""Applying one delivered event to a projection, exactly once on its database.

One transaction: read the projection's row under a shared lock (so a rebuild's switch waits
for the applies in flight, and applies wait for the switch), skip the event if the active
generation was built from history through its position (looked up in the outbox by event id
when the bus delivers envelopes without one, as Kafka and AMQP do), claim the inbox entry of the
generation (a redelivery finds it and does nothing), run the handler, raise the checkpoint to
that position (the looked-up one too: without it the status of a projection on Kafka or AMQP
reported lag that never went down), commit. A failure rolls all of it back and the bus retries
the delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dddframe.bus.context import Inbox
from dddframe.bus.listener import ListenerTarget, decode_event
from dddframe.bus.subscription import Subscription
from dddframe.database import Database
from dddframe.domain.envelope import Envelope
from dddframe.domain.events import EventRegistry
from dddframe.errors import PoisonEvent, close_matches
from dddframe.observability.delivery import observe_delivery
from dddframe.outbox.tables import outbox_table
from dddframe.projections.projection import ProjectionView
from dddframe.projections.rows import RowCache
from dddframe.projections.store import ProjectionStore

if TYPE_CHECKING:
    from dddframe.projections.registry import RegisteredProjection

__all__ = ["apply_envelope", "inbox_consumer", "make_live_deliver", "outbox_position"]

log = logging.getLogger("dddframe.projections")


def inbox_consumer(name: str, generation: int) -> str:
    """The inbox consumer of one generation of a projection."""
    return f"projection:{name}:g{generation}"


async def apply_envelope(
    session: AsyncSession,
    projection: RegisteredProjection,
    generation: int,
    envelope: Envelope,
    registry: EventRegistry,
    rows: RowCache,
) -> None:
    """Decode ``envelope`` and run its handler on ``generation``'s tables (no inbox, no
    checkpoint: the caller records those in the same transaction, and flushes ``rows``, where
    the rows the handler put through the view wait)."""
    target = projection.handlers.get(envelope.name)
    if target is None:
        raise PoisonEvent(
            f"projection {projection.name} is bound to {sorted(projection.handlers)}, not to "
            f"{envelope.name[:200]!r}." + close_matches(envelope.name, projection.handlers)
        )
    if not registry.is_known(envelope.name):
        raise PoisonEvent(f"no event class or declaration is named {envelope.name!r}")
    event = decode_event(envelope, target.event_type, registry)
    view = ProjectionView(session, projection.generation(generation), envelope, rows)
    await _call(projection.instance(), target, event, view)


async def _call(instance: Any, target: ListenerTarget, event: Any, view: ProjectionView) -> None:
    await getattr(instance, target.method)(event, view)


async def outbox_position(session: AsyncSession, envelope: Envelope) -> int | None:
    """The outbox position of an envelope delivered without one (the Kafka and AMQP buses carry
    the event, not its position): looked up by event id; None if retention removed the row."""
    found = await session.scalar(
        select(outbox_table.c.position).where(outbox_table.c.event_id == str(envelope.event_id))
    )
    return int(found) if found is not None else None


def make_live_deliver(
    projection: RegisteredProjection,
    *,
    database: Database,
    registry: EventRegistry,
) -> Callable[[Envelope, int, Subscription], Awaitable[None]]:
    """The delivery callable of a projection's subscription (every bus calls it alike)."""
    store = ProjectionStore(database.dialect)
    name = projection.name

    async def deliver(envelope: Envelope, attempt: int, subscription: Subscription) -> None:
        with observe_delivery(envelope, subscription.name, attempt):
            async with database.session() as session, session.begin():
                state = await store.lock(session, name, exclusive=False)
                generation = state.active_generation
                checkpoint = await store.checkpoint(session, name, generation)
                built = checkpoint.built_through if checkpoint is not None else 0
                position = envelope.position
                if position is None:  # also for the checkpoint: status reports lag from it
                    position = await outbox_position(session, envelope)
                if position is not None and position <= built:
                    log.debug("%s: %s was replayed into g%d", name, envelope.event_id, generation)
                    return
                inbox = Inbox(inbox_consumer(name, generation), str(envelope.event_id))
                if not await inbox.claim(session):
                    log.debug("%s: %s applied before", name, envelope.event_id)
                    return
                # Live: rows read are locked (concurrent deliveries may change the same row).
                rows = RowCache(database.dialect, lock=True)
                await apply_envelope(session, projection, generation, envelope, registry, rows)
                await rows.flush(session)
                await store.advance(session, name, generation, envelope, position=position)

    return deliver
