"""What every broker relay shares: one active relay per lease, a stored position, commit-order
reads and a loop that survives broker and database trouble.

A relay moves committed outbox events to a broker. Subclasses (the Kafka and AMQP relays) only
say how a batch is sent and acknowledged (:meth:`OutboxRelay.run_once`) and what to drop after a
failure; the lease, the position, the wake-up and the back-off live here once.

The position is stored only for events the broker acknowledged, so a relay killed at any point
resends from there: at least once, duplicates absorbed by the consumers' inboxes.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row

from dddframe.database import Database
from dddframe.domain.envelope import Envelope
from dddframe.outbox.leases import Leases
from dddframe.outbox.reader import OutboxReader, PositionStore
from dddframe.outbox.records import ENVELOPE_COLUMNS, as_poison, envelope_of
from dddframe.outbox.sequencer import Sequencer

__all__ = ["OutboxRelay"]

log = logging.getLogger("dddframe.outbox.relay")

MAX_BACKOFF = 5.0


_CELLS = len(ENVELOPE_COLUMNS)  # a row's cells before the head a read may add


class OutboxRelay(abc.ABC):
    """Base of the broker relays.

    ``name`` is the relay's position in ``dddframe_positions`` (``relay.amqp``,
    ``relay.kafka.<cluster>``); ``lease`` the lease that keeps one of them active across
    processes. ``run()`` relays until cancelled; set ``wake`` after a commit to skip the poll.
    """

    def __init__(
        self,
        database: Database,
        *,
        name: str,
        lease: str,
        owner: str,
        batch_size: int,
        poll_interval: float,
        lease_ttl: float,
        initial_backoff: float = 0.1,
    ) -> None:
        self.database = database
        self.name = name
        self.lease = lease
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.position = 0  # stored: everything up to here was acknowledged by the broker
        self.sent = 0
        self.refused = 0  # events sent as poison, or passed over, because the broker refuses them
        self.active = False
        self.wake = asyncio.Event()
        self._initial_backoff = initial_backoff
        self._leases = Leases(database, owner, lease_ttl)
        # Renewing on every batch would cost a transaction per batch; a third of the TTL
        # leaves two renewals' slack before another relay may take over.
        self._renew_every = lease_ttl / 3
        self._renewed = 0.0
        self._sequencer = Sequencer()
        self._reader = OutboxReader()
        self._positions = PositionStore()
        # The batch being read ahead: (after, the read), see read().
        self._ahead: tuple[int, asyncio.Future[tuple[Sequence[Row[Any]], int]]] | None = None

    # -- what a transport provides ----------------------------------------------------------

    @abc.abstractmethod
    async def run_once(self) -> int:
        """Send one batch; return how far the read moved (0: nothing new)."""

    def forget_inflight(self) -> None:  # noqa: B027 - optional hook
        """After a failure or a lease change: drop unacknowledged work, resend from position."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Drop the broker connection (reconnected on the next batch)."""

    async def before_leaving(self) -> None:  # noqa: B027 - optional hook
        """On stop, while still active: wait for acknowledgements and store what they cover."""

    # -- shared ------------------------------------------------------------------------------

    def refuse(self, env: Envelope, reason: str, *, drop_payload: bool = False) -> Envelope:
        """What to send for an event the broker cannot take as it is (a topic or routing key
        it rejects, a header it cannot carry, too large): the event as poison, the reason in
        its ``dddframe-undecodable`` header and, when it is the payload that is too large,
        without it. Every subscription of its name then dead-letters it at once, with the
        reason, through the one delivery decision; later events flow (or wait behind it,
        under ``block_aggregate``) instead of the relay stopping on it."""
        self._log_refused(env, f"cannot be sent as it is: {reason}; sent as poison")
        return as_poison(env, reason, payload="" if drop_payload else None)

    def pass_over(self, env: Envelope, reason: str) -> None:
        """Log an event no subscriber can receive in any form (it stays in the outbox)."""
        self._log_refused(env, f"is passed over: {reason}")

    def _log_refused(self, env: Envelope, what: str) -> None:
        self.refused += 1
        log.error(
            "%s: event %s (%r) at position %s %s",
            self.name,
            env.event_id,
            env.name[:200],
            env.position,
            what,
            extra={"event_id": str(env.event_id)},
        )

    async def run(self) -> None:
        """Relay until cancelled; broker or database trouble is logged and retried."""
        backoff = self._initial_backoff
        try:
            while True:
                try:
                    if not await self._hold_lease():
                        await self._sleep(self._renew_every)
                        continue
                    moved = await self.run_once()
                    backoff = self._initial_backoff
                    if not moved:
                        await self._sleep(self.poll_interval)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning(
                        "%s: %s; resending from position %d in %.1fs",
                        self.name,
                        exc,
                        self.position,
                        backoff,
                    )
                    self._drop_read_ahead()
                    self.forget_inflight()
                    await self.close()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            self._drop_read_ahead()
            if self.active:
                with contextlib.suppress(Exception):  # unsaved work is resent by the next one
                    await self.before_leaving()
            self.forget_inflight()
            await self.close()
            if self.active:
                with contextlib.suppress(Exception):  # it expires on its own otherwise
                    await self._leases.release(self.lease)

    async def read(self, after: int) -> tuple[list[Envelope], int]:
        """Sequence what committed, then read the next batch after ``after`` in commit order.

        A full batch means a backlog: the batch after it is then read ahead, while the caller
        sends this one, and handed out by the next call that asks for it (positions never
        change once given, so a batch read ahead is the batch a read would return then)."""
        rows, upto = await self.read_rows(after)
        return [envelope_of(*r[:_CELLS]) for r in rows], upto

    async def read_rows(self, after: int) -> tuple[Sequence[Row[Any]], int]:
        """:meth:`read` without decoding the rows (see :meth:`OutboxReader.read_rows`): for a
        relay that builds what it sends from the row's cells."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == after:
            batch = await ahead[1]
        else:
            if ahead is not None:
                _discard(ahead[1])
            batch = await self._read_now(after)
        rows, upto = batch
        if len(rows) >= self.batch_size and upto > after:
            self._ahead = (upto, asyncio.ensure_future(self._read_now(upto)))
        return batch

    async def _read_now(self, after: int) -> tuple[Sequence[Row[Any]], int]:
        async with self.database.connect() as conn:
            await self._sequencer.sequence(conn)
            return await self._reader.read_rows(conn, after=after, limit=self.batch_size)

    def _drop_read_ahead(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            _discard(ahead[1])

    async def save_position(self, upto: int) -> None:
        """Store that everything up to ``upto`` was acknowledged."""
        if upto > self.position:
            async with self.database.connect() as conn:
                await self._positions.save(conn, self.name, upto)
                await conn.commit()
            self.position = upto

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.wake.wait()
        self.wake.clear()

    async def _hold_lease(self) -> bool:
        now = time.monotonic()
        if self.active and now - self._renewed < self._renew_every:
            return True
        held = await self._leases.acquire(self.lease)
        if held and not self.active:
            async with self.database.connect() as conn:
                self.position = await self._positions.load(conn, self.name, start="earliest")
                await conn.commit()
            self.forget_inflight()
            log.info("%s: active from position %d", self.name, self.position)
        elif not held and self.active:
            log.warning("%s: lost the lease; another relay sends now", self.name)
            self.forget_inflight()
        self.active = held
        self._renewed = now
        return held


def _discard(read: asyncio.Future[tuple[Sequence[Row[Any]], int]]) -> None:
    """Drop a read nobody will use (its error, if any, is of no interest any more)."""
    if read.done():
        if not read.cancelled():
            read.exception()
    else:
        read.cancel()
        read.add_done_callback(lambda f: f.cancelled() or f.exception())
