"""Delivering the outbox to one subscription: lanes, retries, dead letters, positions.

This is the shared delivery mechanism of the buses that read the outbox themselves (in-process and
database). For each batch read in position order it splits events into ``concurrency`` lanes by a
stable hash of the aggregate, so one aggregate's events stay in order while different aggregates
run in parallel, then persists the position the batch reached.

A failed delivery is parked in the database with its retry time, and the aggregate is *blocked*
for this subscription: its later events are parked behind it (``waiting``) instead of overtaking
it, while the lane moves on to other aggregates (:class:`~dddframe.bus.parked.ParkedEvents`).
The retry loop delivers due retries and then releases the waiting events in order. When retries
run out the event becomes a dead letter; under ``block_aggregate`` (the default) the aggregate
stays blocked until an operator replays or purges it, under ``continue`` its later events flow
on. Nothing is ever dropped: every event of a batch is delivered or parked before the position
moves past it. What to do after a failure (retry, dead letter, wait) is
:func:`dddframe.bus.decision.decide`'s answer, as on every transport.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import defaultdict
from collections.abc import Callable

from dddframe.bus.attempts import attempt_delivery
from dddframe.bus.dead_letter_store import DeadLetterStore
from dddframe.bus.decision import (
    DeadLetter,
    DeliveryPolicy,
    Failure,
    decide,
)
from dddframe.bus.gate import Connect
from dddframe.bus.parked import ParkedEvents
from dddframe.bus.subscription import Subscription
from dddframe.database import Database
from dddframe.domain.envelope import Envelope
from dddframe.errors import ConfigurationError, WorkerCrashed
from dddframe.outbox.reader import OutboxReader, PositionStore
from dddframe.outbox.sequencer import SharedRead

__all__ = ["SubscriptionRunner", "lane_of"]

log = logging.getLogger("dddframe.delivery")


def lane_of(ordering_key: str, lanes: int) -> int:
    """A lane number that is the same in every process (``hash()`` is salted per process)."""
    return zlib.crc32(ordering_key.encode()) % lanes


class SubscriptionRunner:
    """Delivers outbox events to one subscription. One runner per subscription per process.

    ``owns_lane`` restricts the runner to some lanes; by default it owns them all. ``connect``
    gives the runner its connections (a bus passes its :class:`~dddframe.bus.gate.ConnectionGate`'s,
    so its runners never hold more than a bounded share of the pool at once).

    Crash guard: every batch is marked in-flight before delivery and unmarked with the position.
    A mark found at start means the process died mid-batch, perhaps because of a listener; the
    runner then delivers the next ``batch_size`` events one at a time, each marked, and an event
    that was in flight ``crash_limit`` times is dead-lettered (:class:`WorkerCrashed`) instead of
    crashing the worker forever. A graceful hand-over (:meth:`hand_over`, before the lease is
    released) clears the mark, so only a process that died leaves one.
    """

    def __init__(
        self,
        database: Database,
        subscription: Subscription,
        store: DeadLetterStore,
        *,
        concurrency: int = 8,
        batch_size: int = 500,
        owns_lane: Callable[[int], bool] | None = None,
        crash_limit: int = 3,
        connect: Connect | None = None,
    ) -> None:
        if concurrency < 1 or batch_size < 1 or crash_limit < 1:
            raise ConfigurationError("concurrency, batch_size and crash_limit must be >= 1")
        self.database = database
        self.subscription = subscription
        self.store = store
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.owns_lane = owns_lane or (lambda lane: True)
        self.crash_limit = crash_limit
        # Where this runner's own connections come from: a bus's ConnectionGate bounds how
        # many its runners hold at once; by default straight from the pool.
        self._connect: Connect = connect or database.connect
        self.position = 0
        self._inflight = 0  # unfinished batches found at start (> 0 after a crash)
        self._unsaved = False  # delivered past the stored position
        # The last batch reached the head: another read now would find nothing (it would only
        # store the position, which the next pass or the idle poll does anyway).
        self.caught_up = False
        self._careful_left = 0  # events still to deliver one at a time after a crash
        self._delivered = 0
        self._reader = OutboxReader()
        self._positions = PositionStore()
        self._autocommit = database.dialect == "postgresql"  # free there (asyncpg)
        self.parked = ParkedEvents(
            database,
            subscription,
            store,
            policy=lambda: self.policy,
            lane=self.lane,
            owns_lane=self.owns_lane,
            connect=self._connect,
        )
        # One pass at a time: a second caller waits and continues from where the first ended,
        # instead of reading (and delivering) the same batch concurrently.
        self._pass = asyncio.Lock()
        self.active = True  # False once the bus dropped this runner (lease lost, stopping)

    def lane(self, key: str) -> int:
        return lane_of(key, self.concurrency)

    async def start(self) -> None:
        """Load the position (creating it from the subscription's ``start``) and blocked keys."""
        async with self._connect() as conn:
            self.position = await self._positions.load(
                conn, self.subscription.name, start=self.subscription.start
            )
            self._inflight = await self._positions.inflight(conn, self.subscription.name)
            await conn.commit()
        if self._inflight:
            log.warning(
                "%s: the last process died while delivering after position %d; delivering "
                "the next %d events one at a time",
                self.subscription.name,
                self.position,
                self.batch_size,
            )
            self._careful_left = self.batch_size
        await self.parked.load()

    async def run_once(self, head: int | None = None) -> int:
        """Deliver (or park) one batch; returns how far it moved (0: caught up).

        Calls never overlap: a call made while another runs waits for it (one pass per
        subscription at a time, whoever calls).

        The position a batch reached is stored by the next batch's read transaction, in the
        same statement that marks that batch in flight, or by the pass that finds nothing new
        (or :meth:`flush` at stop): one transaction per batch instead of two, and none between
        a wake-up and the listener. A crash re-delivers at most the batch after the stored
        position, as before.
        """
        async with self._pass:
            return await self._run_once(head)

    async def _run_once(self, head: int | None) -> int:
        if not self.active:
            return 0  # dropped or handed over: not a batch more (hand_over stored the position)
        start = self.position
        careful = self._careful_left > 0
        if head is not None and head <= start and not self._unsaved:
            self.caught_up = True
            return 0  # nothing new since the caller's sequencer ran: no need to ask
        async with self._connect() as conn:
            if self._autocommit:
                # Read and mark need no common transaction; autocommit saves BEGIN and COMMIT
                # round trips between a wake-up and the listener.
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            envelopes, upto = await self._reader.read(
                conn,
                after=self.position,
                limit=1 if careful else self.batch_size,
                names=self.subscription.event_names,
                head=head,
            )
            if upto == start:
                self.caught_up = True
                if self._unsaved:
                    await self._positions.save(conn, self.subscription.name, self.position)
                    await conn.commit()
                    self._unsaved = False
                return 0
            if envelopes:
                await self._positions.advance_and_mark(conn, self.subscription.name, start)
                await conn.commit()
            # else: nothing here for this subscription (other names), so nothing can crash
            # while "in flight": the position moves in memory and is stored lazily.
        return await self._deliver_batch(envelopes, start, upto, careful=careful)

    def shares_reads_at(self, position: int) -> bool:
        """Whether this runner can take a :class:`SharedRead` made after ``position``: it is
        there, and not delivering one event at a time after a crash."""
        return self.active and self.position == position and self._careful_left <= 0

    def can_take(self, shared: SharedRead) -> bool:
        """Whether ``shared`` was read for this runner where it still is."""
        return self.shares_reads_at(shared.after) and self.subscription.name in shared.subscriptions

    async def take(self, shared: SharedRead) -> int:
        """Deliver this subscription's events of a batch read for several at once (see
        :meth:`Sequencer.sequence_and_read`, which stored the position and marked it in
        flight); returns how far it moved."""
        async with self._pass:
            return await self._take(shared)

    async def _take(self, shared: SharedRead) -> int:
        if not self.active:
            return 0  # handed over after the shared read: hand_over cleared its mark
        start = self.position
        if not self.can_take(shared):
            raise ConfigurationError(
                f"{self.subscription.name} at {start} cannot take a read after {shared.after} "
                f"for {sorted(shared.subscriptions)}"
            )
        if shared.upto == start:
            # Nothing new: a position kept unsaved is stored by run_once, as on every pass
            # that finds nothing.
            self.caught_up = not self._unsaved
            return 0
        names = self.subscription.event_names
        envelopes = [env for env in shared.envelopes if env.name in names]
        moved = await self._deliver_batch(envelopes, start, shared.upto, careful=False)
        self.caught_up = shared.complete
        return moved

    async def _deliver_batch(
        self, envelopes: list[Envelope], start: int, upto: int, *, careful: bool
    ) -> int:
        """Deliver (or park) a batch read after ``start`` up to ``upto``, marked in flight."""
        if careful:
            self._careful_left -= upto - start
            if envelopes and self._inflight:
                crashed = WorkerCrashed(
                    f"the worker died {self._inflight} times while delivering this event; "
                    "fix the listener, then replay it"
                )
                verdict = decide(
                    self.policy,
                    attempt=self._inflight,
                    failure=Failure.of(crashed),
                    envelope=envelopes[0],
                )
                if isinstance(verdict, DeadLetter):
                    # This very event was in flight crash_limit times: don't run it again.
                    await self.parked.park_failure(envelopes[0], crashed, verdict)
                    envelopes = []
        lanes: dict[int, list[Envelope]] = defaultdict(list)
        for env in envelopes:
            lane = self.lane(env.ordering_key)
            if self.owns_lane(lane):
                lanes[lane].append(env)
        if len(lanes) == 1:
            await self._run_lane(next(iter(lanes.values())))
        elif lanes:
            # Every lane ends before the batch does, even when one fails: a lane left running
            # after its batch raised would deliver alongside the next pass.
            results = await asyncio.gather(
                *(self._run_lane(batch) for batch in lanes.values()), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        self.position = upto
        self.caught_up = not careful and len(envelopes) < self.batch_size
        self._unsaved = True
        self._inflight = 0
        return upto - start

    @property
    def delivered(self) -> int:
        """Events delivered by this runner (on a first attempt or from the parked ones)."""
        return self._delivered + self.parked.delivered

    @property
    def unsaved(self) -> bool:
        """Whether the position delivered so far is not stored yet (see :meth:`run_once`)."""
        return self._unsaved

    async def flush(self) -> None:
        """Store the position delivered so far and clear the in-flight mark (when idle)."""
        if self._unsaved:
            await self._store_position()

    async def hand_over(self) -> None:
        """Stop and leave the subscription clean for its next owner: deliver no more passes,
        wait for the current one to end, then store the position delivered so far and clear
        the in-flight mark, whether or not the position moved (a pass that failed or was
        cancelled did not crash the process: the next owner delivers that batch again, in
        batches). Call it before releasing the subscription's lease on a graceful hand-over
        or stop, so the next owner finds no crash mark; a process that dies never calls it,
        and its mark makes the next owner deliver one event at a time (see the class).

        A crash mark found at start is left as it is until this runner delivered the event
        after it: handing over before that keeps the crash count for the next owner. Once
        past it, a runner still delivering one at a time clears the mark like any other: the
        events it delivered did not crash it, and a listener that kills the next owner
        leaves a mark of its own, counted as before.
        """
        self.active = False
        async with self._pass:
            if self._inflight:
                return  # the crash mark found at start is not resolved yet: keep it
            await self._store_position()

    async def _store_position(self) -> None:
        """Store the position delivered so far; clears the in-flight mark."""
        async with self._connect() as conn:
            await self._positions.save(conn, self.subscription.name, self.position)
            await conn.commit()
        self._unsaved = False

    @property
    def careful(self) -> bool:
        """Whether the runner delivers one event at a time (after a crash mark, see the class)."""
        return self._careful_left > 0

    async def _run_lane(self, envelopes: list[Envelope]) -> None:
        policy = self.policy  # the same for every event of the batch
        for env in envelopes:
            await self._handle(env, policy)

    @property
    def policy(self) -> DeliveryPolicy:
        """The subscription's policies, as :func:`decide` takes them."""
        return DeliveryPolicy.of(self.subscription, crash_limit=self.crash_limit)

    async def _handle(self, env: Envelope, policy: DeliveryPolicy) -> None:
        if self.parked.blocked and await self.parked.hold_back(env):  # (nothing blocked: skip)
            return
        failure = await attempt_delivery(self.subscription, env, 1, policy)
        if failure is None:
            self._delivered += 1
            return
        await self.parked.park_failure(env, *failure)

    async def run_retries(self) -> float | None:
        """Deliver due retries and release what waits behind them (see
        :meth:`ParkedEvents.run_retries`); seconds until the next retry is due, or None."""
        return await self.parked.run_retries()

    @property
    def retry_wakeup(self) -> asyncio.Event:
        """Set when a retry was scheduled: the retry loop looks again."""
        return self.parked.retry_wakeup

    @property
    def releasing(self) -> bool:
        """Whether parked events are being delivered right now."""
        return self.parked.releasing > 0

    async def has_pending(self, head: int) -> bool:
        """True while events up to ``head`` are not yet delivered or dead-lettered."""
        if self.position < head or self.parked.releasing:
            return True
        return await self.parked.pending()
