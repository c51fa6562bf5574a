"""Blocking retries that outlive their consumer.

With ``retry_mode="blocking"`` a failed record is retried in place, its partition waiting. When
the consumer stops while such a record waits for its next attempt, the record is left
uncommitted (the next owner of the partition fetches it again, in its place, so order holds),
and its retry state — the next attempt and when it is due — is stored as a ``retry`` row in
``dddframe_parked``. The next consumer of the group loads those rows when partitions are
assigned and resumes the record at that attempt and time, instead of counting from one again.
The row is removed once the record is delivered or dead-lettered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select

from dddframe.bus.codec import encode_envelope
from dddframe.database import Database
from dddframe.domain.envelope import Envelope
from dddframe.outbox.records import utcnow
from dddframe.outbox.tables import PARKED_RETRY, parked_table

__all__ = ["RetryState"]

log = logging.getLogger("dddframe.bus.kafka.consumer")


class RetryState:
    """The stored retry state of one consumer group's subscriptions."""

    def __init__(self, database: Callable[[], Database]) -> None:
        self._database = database
        self._pending: dict[tuple[str, str], tuple[int, float]] = {}

    async def load(self, subscriptions: Collection[str]) -> None:
        """Read the stored retries of these subscriptions (when partitions are assigned)."""
        c = parked_table.c
        async with self._database().connect() as conn:
            rows = await conn.execute(
                select(c.subscription, c.event_id, c.attempts, c.next_attempt_at).where(
                    c.state == PARKED_RETRY, c.subscription.in_(sorted(subscriptions))
                )
            )
            found = rows.all()
            await conn.commit()
        pending: dict[tuple[str, str], tuple[int, float]] = {}
        for sub, event_id, attempts, due in found:
            at = due.replace(tzinfo=due.tzinfo or UTC).timestamp() if due else 0.0
            pending[(sub, event_id)] = (int(attempts), at)
        self._pending = pending

    def resume(self, subscription: str, envelope: Envelope) -> tuple[int, float] | None:
        """(attempt, due time) to resume a record at, if a stopped consumer left it so."""
        return self._pending.get((subscription, str(envelope.event_id)))

    async def save(
        self, subscription: str, envelope: Envelope, attempt: int, due: float, error: str
    ) -> None:
        """Store that ``envelope`` is to be tried again at ``attempt`` at ``due``."""
        event_id = str(envelope.event_id)
        now = utcnow()
        row = {
            "subscription": subscription,
            "event_id": event_id,
            "position": None,
            "ordering_key": envelope.ordering_key,
            "name": envelope.name,
            "envelope": encode_envelope(envelope),
            "state": PARKED_RETRY,
            "attempts": attempt,
            "next_attempt_at": datetime.fromtimestamp(due, UTC),
            "error": error[:4000],
            "traceback": None,
            "created_at": now,
            "updated_at": now,
        }
        c = parked_table.c
        async with self._database().engine.begin() as conn:
            await conn.execute(
                delete(parked_table).where(c.subscription == subscription, c.event_id == event_id)
            )
            await conn.execute(insert(parked_table).values(**row))
        self._pending[(subscription, event_id)] = (attempt, due)

    async def forget(self, subscription: str, envelope: Envelope) -> None:
        """The record was delivered or dead-lettered: drop its stored retry, if any."""
        event_id = str(envelope.event_id)
        if self._pending.pop((subscription, event_id), None) is None:
            return
        c = parked_table.c
        try:
            async with self._database().engine.begin() as conn:
                await conn.execute(
                    delete(parked_table).where(
                        c.subscription == subscription,
                        c.event_id == event_id,
                        c.state == PARKED_RETRY,
                    )
                )
        except Exception:  # a stale row only makes a later redelivery wait once more
            log.warning("%s: could not remove the stored retry of %s", subscription, event_id)

    @staticmethod
    def wait_for(due: float) -> float:
        return max(0.0, due - time.time())
