"""One subscription's parked events in one process: blocked aggregates, parking, retries.

A failed delivery is parked in ``dddframe_parked`` with its retry time and its aggregate is
*blocked* for the subscription: later events of the aggregate are parked behind it
(``waiting``) instead of overtaking it. :meth:`ParkedEvents.run_retries` delivers due retries
and then releases what waits behind them, in order; a dead letter under ``block_aggregate``
keeps its aggregate blocked until an operator replays or purges it. What to do after each
failure is :func:`dddframe.bus.decision.decide`'s answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable

from dddframe.bus.attempts import Failed, attempt_delivery, log_failure
from dddframe.bus.dead_letter_store import DeadLetterStore
from dddframe.bus.dead_letters import Parked
from dddframe.bus.decision import (
    DeadLetter,
    DeliveryPolicy,
    Failure,
    Head,
    RetryAfter,
    WaitBehind,
    decide,
)
from dddframe.bus.gate import Connect
from dddframe.bus.subscription import Subscription
from dddframe.database import Database
from dddframe.domain.envelope import Envelope
from dddframe.errors import PoisonEvent
from dddframe.observability.metrics import record_dead_lettered
from dddframe.outbox.records import as_utc, utcnow
from dddframe.outbox.tables import PARKED_DEAD, PARKED_RETRY, PARKED_WAITING

__all__ = ["ParkedEvents"]

log = logging.getLogger("dddframe.delivery")


class ParkedEvents:
    """The parked events of one subscription, for the lanes this process owns.

    ``blocked`` maps an ordering key to the position of its first parked event (None when
    unknown); ``releasing`` counts releases in progress; ``delivered`` counts parked events
    delivered on a later attempt.
    """

    def __init__(
        self,
        database: Database,
        subscription: Subscription,
        store: DeadLetterStore,
        *,
        policy: Callable[[], DeliveryPolicy],
        lane: Callable[[str], int],
        owns_lane: Callable[[int], bool],
        connect: Connect | None = None,
    ) -> None:
        self.database = database
        self._connect: Connect = connect or database.connect
        self.subscription = subscription
        self.store = store
        self.policy = policy
        self.lane = lane
        self.owns_lane = owns_lane
        self.blocked: dict[str, int | None] = {}
        self._key_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.releasing = 0
        self.delivered = 0
        self.retry_wakeup = asyncio.Event()

    @property
    def _dead_blocks(self) -> bool:
        return self.subscription.dead_letter == "block_aggregate"

    async def load(self) -> None:
        """Rebuild the blocked aggregates from the parked rows (at start)."""
        async with self._connect() as conn:
            heads = await self.store.heads(
                conn, self.subscription.name, include_dead=self._dead_blocks
            )
        self.blocked = {h.ordering_key: h.position for h in heads}

    async def hold_back(self, env: Envelope) -> bool:
        """Park ``env`` as waiting when its aggregate is blocked (or skip it when it was
        delivered before its successor failed); True when it must not be delivered now."""
        key = env.ordering_key
        if key in self.blocked:
            async with self._key_locks[key]:
                if key in self.blocked:
                    head = self.blocked[key]
                    if head is not None and env.position is not None and env.position < head:
                        return True  # delivered before its successor failed (a redelivered batch)
                    verdict = decide(
                        self.policy(), envelope=env, held_by=Head(f"position {head}", dead=False)
                    )
                    assert isinstance(verdict, WaitBehind)
                    async with self._connect() as conn:
                        await self.store.park(
                            conn, self.subscription.name, env, state=PARKED_WAITING, attempts=0
                        )
                        await conn.commit()
                    return True
        return False

    async def park_failure(
        self, env: Envelope, exc: BaseException, verdict: RetryAfter | DeadLetter
    ) -> None:
        key = env.ordering_key
        retrying = isinstance(verdict, RetryAfter)
        delay = verdict.delay if isinstance(verdict, RetryAfter) else None
        attempts = verdict.attempts if isinstance(verdict, DeadLetter) else 1
        async with self._key_locks[key]:
            async with self._connect() as conn:
                await self.store.park(
                    conn,
                    self.subscription.name,
                    env,
                    state=PARKED_RETRY if retrying else PARKED_DEAD,
                    attempts=attempts,
                    delay=delay,
                    error=exc,
                )
                await conn.commit()
            if retrying or (isinstance(verdict, DeadLetter) and verdict.holds):
                self.blocked.setdefault(key, env.position)
        log_failure(log, self.subscription.name, env, exc, verdict)
        if not retrying:
            record_dead_lettered(self.subscription.name)
        if retrying:
            self.retry_wakeup.set()

    async def run_retries(self) -> float | None:
        """Deliver due retries and release what waits behind them.

        Returns seconds until the next retry is due (None when none is scheduled).
        """
        async with self._connect() as conn:
            heads = await self.store.heads(
                conn, self.subscription.name, include_dead=self._dead_blocks
            )
        now = utcnow()
        next_due: float | None = None
        seen = set()
        for head in heads:
            seen.add(head.ordering_key)
            if not self.owns_lane(self.lane(head.ordering_key)):
                continue
            if head.ordering_key not in self.blocked:
                self.blocked[head.ordering_key] = head.position
            if head.state == PARKED_DEAD:
                continue
            if head.state == PARKED_RETRY:
                wait = ((as_utc(head.next_attempt_at) or utcnow()) - now).total_seconds()
                if wait > 0:
                    next_due = wait if next_due is None else min(next_due, wait)
                    continue
            await self._release(head.ordering_key)
        for key in [k for k in self.blocked if k not in seen]:
            await self._release(key)  # purged elsewhere: unblock
        return next_due

    async def _release(self, key: str) -> None:
        """Deliver a key's parked events in order until one fails or must wait."""
        self.releasing += 1
        try:
            async with self._key_locks[key]:
                while True:
                    async with self._connect() as conn:
                        row = await self.store.first_of_key(
                            conn, self.subscription.name, key, include_dead=self._dead_blocks
                        )
                    if row is None:
                        self.blocked.pop(key, None)
                        return
                    self.blocked[key] = row.position
                    if row.state == PARKED_DEAD:
                        return
                    if (
                        row.state == PARKED_RETRY
                        and (as_utc(row.next_attempt_at) or utcnow()) > utcnow()
                    ):
                        self.retry_wakeup.set()
                        return
                    if not await self._redeliver(row):
                        return
        finally:
            self.releasing -= 1

    async def _redeliver(self, row: Parked) -> bool:
        number = row.attempts + 1
        env: Envelope | None = None
        failure: Failed | None
        try:
            env = row.envelope
        except PoisonEvent as unreadable:  # the parked copy itself cannot be read
            failure = (
                unreadable,
                DeadLetter(Failure.of(unreadable).reason, number, self.policy().blocks),
            )
        else:
            failure = await attempt_delivery(self.subscription, env, number, self.policy())
        if failure is not None:
            error, verdict = failure
            async with self._connect() as conn:
                await self.store.set_state(
                    conn,
                    row.id,
                    state=PARKED_RETRY if isinstance(verdict, RetryAfter) else PARKED_DEAD,
                    attempts=number,
                    delay=verdict.delay if isinstance(verdict, RetryAfter) else None,
                    error=error,
                )
                await conn.commit()
            if env is not None:
                log_failure(log, self.subscription.name, env, error, verdict)
            if isinstance(verdict, DeadLetter):
                record_dead_lettered(self.subscription.name)
            # Under `continue` a dead letter does not hold back the events parked behind it.
            return isinstance(verdict, DeadLetter) and not verdict.holds
        self.delivered += 1
        async with self._connect() as conn:
            await self.store.remove(conn, row.id)
            await conn.commit()
        return True

    async def pending(self) -> bool:
        """Whether a parked event of this process's lanes still waits for a retry or release
        (dead letters do not count)."""
        if not self.blocked:
            return False
        async with self._connect() as conn:
            heads = await self.store.heads(
                conn, self.subscription.name, include_dead=self._dead_blocks
            )
        return any(
            h.state != PARKED_DEAD for h in heads if self.owns_lane(self.lane(h.ordering_key))
        )
