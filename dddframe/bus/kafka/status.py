"""Subscription status on Kafka: committed offsets of each consumer group against the end of its
topics, the group's retry topic and its dead-letter topic.

A subscription's group (``group_prefix + group``) commits an offset per partition only when
every subscription of the group is done with the records before it, so for each subscription:

* ``position``: the sum of the group's committed offsets over the subscription's topics
  (None while the group has committed nothing);
* ``lag_events``: records after the committed offsets (before the log start when the group has
  not committed yet), on the topics the subscription reads;
* ``lag_seconds``: the age of the oldest of those records (its timestamp);
* ``retries_pending``: records addressed to the subscription in the group's retry topic after
  the group's committed offset there (``retry_mode="topic"``), and its records waiting in the
  dead-letter topic behind a dead letter of their aggregate (as the database bus counts its
  ``waiting`` rows);
* ``dead_letters``: unresolved dead letters of the subscription in the group's dead-letter
  topic, not counting those waiting behind one; poison records that belong to no subscription
  are reported as ``<group>.*``.

It reads with a consumer without a group and an admin client, so an operator process that
does not consume (``consume=False``) sees the same as the workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from dddframe.bus.kafka.config import KafkaCluster
from dddframe.bus.kafka.dead_letters import KafkaDeadLetters, read_to_end
from dddframe.bus.kafka.handling import SUBSCRIPTION
from dddframe.bus.kafka.topics import TopicNaming
from dddframe.database import Database
from dddframe.outbox.records import utcnow
from dddframe.outbox.status import SubscriptionStatus, SystemStatus, age, read_outbox
from dddframe.outbox.tables import PARKED_WAITING

__all__ = ["KafkaStatus", "SubscriptionTopics"]


@dataclass(frozen=True, slots=True)
class SubscriptionTopics:
    """Where one subscription reads: its name, cluster, consumer group id and topics."""

    subscription: str
    cluster: str
    group_id: str
    topics: frozenset[str]


@dataclass
class _Offsets:
    committed: dict[TopicPartition, int]  # only partitions the group committed
    start: dict[TopicPartition, int]
    end: dict[TopicPartition, int]  # high watermarks, from fetch responses
    first: dict[TopicPartition, datetime]  # timestamp of the first record not processed

    def next_of(self, tp: TopicPartition) -> int:
        """The offset the group reads next on a partition."""
        return self.committed.get(tp, self.start.get(tp, 0))


class KafkaStatus:
    """Reads the status of every subscription of a Kafka bus."""

    def __init__(
        self,
        clusters: Mapping[str, KafkaCluster],
        naming: TopicNaming,
        database: Callable[[], Database],
        plan: Callable[[], Sequence[SubscriptionTopics]],
        dead_letters: KafkaDeadLetters,
        *,
        timeout: float = 30.0,
    ) -> None:
        self.clusters = clusters
        self.naming = naming
        self._database = database
        self._plan = plan
        self.dead_letters = dead_letters
        self.timeout = timeout

    async def read(self) -> SystemStatus:
        async with self._database().connect() as conn:
            outbox = await read_outbox(conn)
        plan = self._plan()
        dead: dict[str, int] = {}
        waiting: dict[str, int] = {}
        for letter in await self.dead_letters.scan():
            counts = waiting if letter.state == PARKED_WAITING else dead
            counts[letter.subscription] = counts.get(letter.subscription, 0) + 1
        rows: list[SubscriptionStatus] = []
        for cname in sorted({p.cluster for p in plan}):
            part = [p for p in plan if p.cluster == cname]
            rows.extend(await self._cluster(cname, part, dead, waiting))
        named = {r.name for r in rows}
        for name, count in sorted(dead.items()):
            if name not in named:  # poison records of a group, no subscription of their own
                rows.append(SubscriptionStatus(name, None, 0, 0.0, 0, count, None))
        rows.sort(key=lambda r: r.name)
        return SystemStatus(outbox.at, outbox.head, outbox.unsequenced, rows, outbox.relays)

    async def _cluster(
        self,
        cname: str,
        plan: Sequence[SubscriptionTopics],
        dead: Mapping[str, int],
        waiting: Mapping[str, int],
    ) -> list[SubscriptionStatus]:
        settings = self.clusters[cname]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap,
            enable_auto_commit=False,
            group_id=None,
            **settings.client_options,
        )
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **settings.client_options)
        await consumer.start()
        try:
            await admin.start()
            existing = await consumer.topics()
            offsets: dict[str, _Offsets] = {}
            for group_id in sorted({p.group_id for p in plan}):
                topics = {t for p in plan if p.group_id == group_id for t in p.topics}
                topics.add(self.naming.retry_topic(group_id))
                tps = [
                    TopicPartition(t, n)
                    for t in sorted(topics & existing)
                    for n in sorted(consumer.partitions_for_topic(t) or ())
                ]
                offsets[group_id] = await self._offsets(consumer, admin, group_id, tps)
            await _fetch_ends(consumer, offsets.values(), self.timeout)
            retries = await self._retries(consumer, offsets)
            now = utcnow()
            rows = []
            for p in plan:
                o = offsets[p.group_id]
                tps = [tp for tp in o.end if tp.topic in p.topics]
                lagging = {tp: o.next_of(tp) for tp in tps if o.end[tp] > o.next_of(tp)}
                committed = [o.committed[tp] for tp in tps if tp in o.committed]
                oldest = min((o.first[tp] for tp in lagging if tp in o.first), default=None)
                rows.append(
                    SubscriptionStatus(
                        name=p.subscription,
                        position=sum(committed) if committed else None,
                        lag_events=sum(o.end[tp] - at for tp, at in lagging.items()),
                        lag_seconds=age(now, oldest),
                        retries_pending=retries.get(p.subscription, 0)
                        + waiting.get(p.subscription, 0),
                        dead_letters=dead.get(p.subscription, 0),
                        updated_at=None,
                    )
                )
            return rows
        finally:
            await admin.close()
            await consumer.stop()

    @staticmethod
    async def _offsets(
        consumer: AIOKafkaConsumer,
        admin: AIOKafkaAdminClient,
        group_id: str,
        tps: Sequence[TopicPartition],
    ) -> _Offsets:
        if not tps:
            return _Offsets({}, {}, {}, {})
        found = await admin.list_consumer_group_offsets(group_id, partitions=list(tps))
        committed = {tp: m.offset for tp, m in found.items() if m is not None and m.offset >= 0}
        start = await consumer.beginning_offsets(list(tps))
        return _Offsets(committed, dict(start), {}, {})

    async def _retries(
        self, consumer: AIOKafkaConsumer, offsets: Mapping[str, _Offsets]
    ) -> dict[str, int]:
        """Records after each group's committed offset in its retry topic, per subscription."""
        counts: dict[str, int] = {}
        for group_id, o in offsets.items():
            topic = self.naming.retry_topic(group_id)
            pending = [tp for tp in o.end if tp.topic == topic and o.end[tp] > o.next_of(tp)]
            if not pending:
                continue
            async for tp, r in read_to_end(consumer, pending, self.timeout):
                if r.offset < o.next_of(tp):
                    continue
                name = dict(r.headers or ()).get(SUBSCRIPTION, b"").decode(errors="replace")
                counts[name] = counts.get(name, 0) + 1
        return counts


async def _fetch_ends(
    consumer: AIOKafkaConsumer, groups: Iterable[_Offsets], timeout: float
) -> None:
    """Fill in the high watermark of every partition and the timestamp of the first record
    each group has not processed, by fetching from the group's next offsets.

    High watermarks come from fetch responses, not ListOffsets (which some Kafka-compatible
    brokers, tansu 0.6 among them, answer wrongly for batched records). Each group is fetched
    on its own, as two groups may be at different offsets of the same partition.
    """
    for o in groups:
        tps = list(o.start)
        if not tps:
            continue
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, o.next_of(tp))
        since = int(time.time() * 1000)
        deadline = time.monotonic() + timeout
        remaining = set(tps)
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading the ends of {sorted(map(str, remaining))} timed out")
            batch = await consumer.getmany(*remaining, timeout_ms=200)
            for tp, records in batch.items():
                if records and tp not in o.first:
                    o.first[tp] = datetime.fromtimestamp(records[0].timestamp / 1000, UTC)
            for tp in list(remaining):
                high, polled = consumer.highwater(tp), consumer.last_poll_timestamp(tp)
                if high is None or polled is None or polled < since:
                    continue
                if high <= o.next_of(tp) or tp in o.first:
                    o.end[tp] = high
                    remaining.discard(tp)
        consumer.unsubscribe()
