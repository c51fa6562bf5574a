"""One member of a Kafka consumer group: partitions in parallel, order within a partition,
offsets committed only for fully processed records.

The fetch loop hands each partition's records to that partition's dispatcher, which splits
them into one lane per record key (the aggregate): a lane handles its records one at a time in
offset order (:class:`~dddframe.bus.kafka.handling.RecordHandler`), different aggregates run in
parallel (at most ``_LANES`` listener calls at once per group), so an aggregate waiting for a
blocking retry holds only itself. The partition's *processed* offset moves past a record only
when it and every record before it are finished; offsets are committed from the processed
offsets only, so a committed offset never passes a record that is not finished: contiguous per
partition. A partition with many unfinished records is paused (back-pressure). On a rebalance
the revoked partitions' in-flight records finish, their processed offsets are committed, and
only then are they released; records not started are dropped and refetched by the new owner.
A broker that is down at start or mid-run is retried with back-off; nothing is committed
that was not processed, so nothing is lost.

Where a group begins: a group with committed offsets continues from them. A new group begins at
the earliest offset, or, when its subscriptions say ``start="latest"``, at the end offsets read
when its partitions are first assigned, committed at once, so a restart before the first event
does not move it (:func:`group_start`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from dddframe.bus.kafka.config import KafkaCluster
from dddframe.bus.kafka.handling import RecordHandler
from dddframe.bus.subscription import Subscription
from dddframe.errors import ConfigurationError, RetryInterrupted

__all__ = ["GroupConsumer", "StartAt", "group_start"]

StartAt = Literal["earliest", "latest"]

log = logging.getLogger("dddframe.bus.kafka.consumer")

_HIGH_WATER = 2000  # unfinished records per partition before it is paused
_LANES = 16  # listener calls at once per group (different aggregates)


def group_start(group_id: str, subscriptions: Sequence[Subscription]) -> StartAt:
    """Where a new consumer group begins: the ``start`` its subscriptions share.

    Kafka offsets are per partition, so an outbox position cannot be a start here, and one
    group cannot begin at two places.

    >>> from dddframe.bus.retry import NoRetry
    >>> def sub(name, start):
    ...     return Subscription(name, "g", "C.m", frozenset({"A:B"}), None, NoRetry(), start=start)
    >>> group_start("g", [sub("g.C.m", "latest"), sub("g.C.n", "latest")])
    'latest'
    >>> group_start("g", [sub("g.C.m", "latest"), sub("g.C.n", "earliest")])
    Traceback (most recent call last):
    ...
    dddframe.errors.ConfigurationError: Kafka consumer group 'g' cannot begin at two places: ...
    """
    starts = {s.name: s.start for s in subscriptions}
    for name, start in starts.items():
        if start not in ("earliest", "latest"):
            raise ConfigurationError(
                f"listen(..., start={start!r}) for {name}: a Kafka consumer group begins at "
                "'earliest' or 'latest'; outbox positions are for the database bus."
            )
    if len(set(starts.values())) > 1:
        listed = ", ".join(f"{n} start={v!r}" for n, v in sorted(starts.items()))
        raise ConfigurationError(
            f"Kafka consumer group {group_id!r} cannot begin at two places: {listed}. "
            "Give the listeners the same start, or put them in modules (groups) of their own."
        )
    return "latest" if "latest" in starts.values() else "earliest"


class _Partition:
    def __init__(self) -> None:
        self.queue: collections.deque[ConsumerRecord[Any, Any]] = collections.deque()  # fetched
        self.lanes: dict[object, collections.deque[ConsumerRecord[Any, Any]]] = {}
        self.running: dict[object, asyncio.Task[None]] = {}
        self.order: collections.deque[int] = collections.deque()  # dispatched, not yet passed
        self.done: set[int] = set()  # finished out of order
        self.ready = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.processed: int | None = None  # next offset to commit
        self.committed: int | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def unfinished(self) -> int:
        return len(self.queue) + len(self.order)

    def finish(self, offset: int) -> None:
        """``offset`` is done; move the processed offset over every finished record in front."""
        self.done.add(offset)
        while self.order and self.order[0] in self.done:
            passed = self.order.popleft()
            self.done.discard(passed)
            self.processed = passed + 1


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: GroupConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.owner._release(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("%s: assigned %s", self.owner.group_id, sorted(map(str, assigned)))
        if self.owner.begin_at == "latest":
            await self.owner.pin_new_partitions(assigned)
        if self.owner.on_assign is not None:
            try:
                await self.owner.on_assign()
            except Exception:
                log.exception("%s: reading the dead-letter topic failed", self.owner.group_id)
        self.owner.joined.set()


class GroupConsumer:
    """Consumes ``topics`` as a member of ``group_id`` and hands records to ``handler``."""

    def __init__(
        self,
        cluster_name: str,
        cluster: KafkaCluster,
        group_id: str,
        topics: set[str],
        handler: RecordHandler,
        *,
        prepare: Callable[[], Awaitable[None]] | None = None,
        on_assign: Callable[[], Awaitable[None]] | None = None,
        revoke_timeout: float = 30.0,
        options: dict[str, Any] | None = None,
        begin_at: StartAt = "earliest",
    ) -> None:
        self.cluster_name = cluster_name
        self.cluster = cluster
        self.group_id = group_id
        self.topics = topics
        self.handler = handler
        self.prepare = prepare
        self.on_assign = on_assign
        self.revoke_timeout = revoke_timeout
        self.options = dict(options or {})
        self.begin_at = begin_at
        self._unpinned: set[TopicPartition] = set()
        self.partitions: dict[TopicPartition, _Partition] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.joined = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._commit_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(_LANES)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"dddframe-kafka-{self.group_id}")

    async def stop(self) -> None:
        self.handler.stopping.set()  # records waiting for a blocking retry yield at once
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def pin_new_partitions(self, assigned: list[TopicPartition]) -> None:
        """Note the assigned partitions the group has no offset for yet; the fetch loop moves
        them to the high watermark of their first fetch response (:meth:`_pin`)."""
        consumer = self.consumer
        if consumer is None:
            return
        for tp in assigned:
            if await consumer.committed(tp) is None:
                self._unpinned.add(tp)

    async def _pin(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
        """Begin a new partition at its high watermark (from a fetch response: some
        Kafka-compatible brokers answer ListOffsets wrongly) and commit it; None until a fetch
        response has told it."""
        high: int | None = consumer.highwater(tp)
        if high is None:
            return None
        consumer.seek(tp, high)
        await consumer.commit({tp: high})
        self._unpinned.discard(tp)
        log.info("%s: %s begins at its latest offset %d", self.group_id, tp, high)
        return high

    def assignment(self) -> set[TopicPartition]:
        return set(self.consumer.assignment()) if self.consumer is not None else set()

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            consumer = AIOKafkaConsumer(
                group_id=self.group_id, **{**self.cluster.consumer_options(), **self.options}
            )
            try:
                if self.prepare is not None:
                    await self.prepare()
                await consumer.start()
                consumer.subscribe(topics=sorted(self.topics), listener=_Rebalance(self))
                self.consumer = consumer
                log.info("%s: consuming %s", self.group_id, ", ".join(sorted(self.topics)))
                backoff = 0.2
                await self._fetch_loop(consumer)
            except asyncio.CancelledError:
                await self._shutdown(consumer)
                raise
            except Exception as exc:
                log.warning(
                    "%s: consumer failed (%s); reconnecting to %s in %.1fs",
                    self.group_id,
                    exc,
                    self.cluster.bootstrap,
                    backoff,
                )
                await self._shutdown(consumer)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _shutdown(self, consumer: AIOKafkaConsumer) -> None:
        with contextlib.suppress(Exception):
            await self._release(list(self.partitions))
        self.consumer = None
        self.joined.clear()
        with contextlib.suppress(Exception):
            await consumer.stop()

    async def _fetch_loop(self, consumer: AIOKafkaConsumer) -> None:
        errors = 0
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=200, max_records=2000)
                errors = 0
            except KafkaError as exc:
                errors += 1
                if errors > 20:
                    raise
                log.warning("%s: fetch failed (%s); retrying", self.group_id, exc)
                await asyncio.sleep(min(0.1 * errors, 2.0))
                continue
            assigned = consumer.assignment()
            begins = {tp: await self._pin(consumer, tp) for tp in self._unpinned & assigned}
            for tp, records in batch.items():
                if tp not in assigned:
                    continue
                if tp in begins:  # a new partition under start="latest": only what follows
                    start = begins[tp]
                    records = [r for r in records if start is not None and r.offset >= start]
                    if not records:
                        continue
                part = self._partition(tp)
                part.queue.extend(records)
                part.idle.clear()
                part.ready.set()
                if part.unfinished > _HIGH_WATER:
                    consumer.pause(tp)
            for tp in consumer.paused():
                p = self.partitions.get(tp)
                if p is None or p.unfinished < _HIGH_WATER // 2:
                    consumer.resume(tp)
            await self.commit()

    def _partition(self, tp: TopicPartition) -> _Partition:
        part = self.partitions.get(tp)
        if part is None:
            part = self.partitions[tp] = _Partition()
            part.task = asyncio.create_task(self._work(tp, part), name=f"dddframe-kafka-{tp}")
        return part

    async def _work(self, tp: TopicPartition, part: _Partition) -> None:
        """Dispatch the partition's records to their aggregates' lanes, in offset order."""
        while True:
            while not part.queue:
                if not part.running:
                    part.idle.set()
                part.ready.clear()
                await part.ready.wait()
            part.idle.clear()
            rec = part.queue.popleft()
            key: object = rec.key if rec.key is not None else ("offset", rec.offset)
            part.order.append(rec.offset)
            part.lanes.setdefault(key, collections.deque()).append(rec)
            if key not in part.running:
                part.running[key] = asyncio.create_task(
                    self._lane(part, key), name=f"dddframe-kafka-{tp}-lane"
                )

    async def _lane(self, part: _Partition, key: object) -> None:
        """One aggregate's records of a partition, one at a time, in offset order."""
        lane = part.lanes[key]
        try:
            while lane:
                rec = lane[0]
                async with self._slots:
                    await self.handler.handle(rec)
                if lane and lane[0] is rec:
                    lane.popleft()
                part.finish(rec.offset)
        except RetryInterrupted:  # stopping: left uncommitted, its retry state stored
            lane.clear()
        finally:
            part.lanes.pop(key, None)
            part.running.pop(key, None)
            if not part.running and not part.queue:
                part.idle.set()

    async def commit(self, only: list[TopicPartition] | None = None) -> None:
        """Commit the processed offsets that moved since the last commit."""
        consumer = self.consumer
        if consumer is None:
            return
        async with self._commit_lock:
            offsets = {
                tp: p.processed
                for tp, p in self.partitions.items()
                if p.processed is not None
                and p.processed != p.committed
                and (only is None or tp in only)
            }
            if not offsets:
                return
            try:
                await consumer.commit(offsets)
            except KafkaError as exc:
                log.warning(
                    "%s: commit failed (%s); records will be redelivered", self.group_id, exc
                )
                return
            for tp, offset in offsets.items():
                self.partitions[tp].committed = offset

    async def _release(self, revoked: list[TopicPartition]) -> None:
        """Finish in-flight records of the revoked partitions, commit them, drop the rest."""
        parts = [(tp, self.partitions[tp]) for tp in revoked if tp in self.partitions]
        for _tp, p in parts:
            p.queue.clear()  # keep only the records in flight; the new owner refetches the rest
            for lane in p.lanes.values():
                while len(lane) > 1:
                    lane.pop()
        if parts:
            waits = [asyncio.create_task(p.idle.wait()) for _, p in parts]
            _done, pending = await asyncio.wait(waits, timeout=self.revoke_timeout)
            for w in pending:
                w.cancel()
        await self.commit([tp for tp, _ in parts])
        for tp, p in parts:
            for task in [*p.running.values(), *([p.task] if p.task is not None else [])]:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            del self.partitions[tp]
        self.joined.clear()
