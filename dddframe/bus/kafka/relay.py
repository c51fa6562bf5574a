"""The relay: outbox -> Kafka, in commit order, advancing only after the broker acknowledged.

One relay per cluster reads the whole outbox by position (the shared Sequencer, OutboxReader and
PositionStore; its position is named ``relay.kafka.<cluster>``), produces the envelopes routed
to its cluster and stores the position a batch reached once every record of the batch was
acknowledged (``acks="all"``). A relay killed in between resends from the stored position:
at-least-once, duplicates absorbed by consumers' inboxes. A lease in ``dddframe_leases`` keeps
one active relay per cluster and outbox however many processes run one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import operator
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from sqlalchemy import Row

from dddframe.bus.codec import HEADER_PREFIX
from dddframe.bus.kafka.batches import Batches, Partitioning
from dddframe.bus.kafka.config import KafkaCluster
from dddframe.bus.kafka.records import (
    HeaderCache,
    Record,
    record_size,
    row_record,
    sized_record,
    to_record,
)
from dddframe.bus.kafka.topics import ROUTE_CLUSTER, TopicNaming, topic_problem
from dddframe.database import Database
from dddframe.domain.envelope import Envelope
from dddframe.errors import ConfigurationError
from dddframe.observability.tracing import relay_span, tracing_enabled
from dddframe.outbox.reader import ROW_FIELDS
from dddframe.outbox.records import UNDECODABLE, row_to_envelope
from dddframe.outbox.relay import OutboxRelay

__all__ = ["Relay", "ensure_topics"]

log = logging.getLogger("dddframe.bus.kafka.relay")
_BY_NAME_MAX = 10_000
_YIELD_EVERY = 255  # rows between two yields to the event loop while producing (2**n - 1)
_name_and_headers = operator.itemgetter(ROW_FIELDS.index("name"), ROW_FIELDS.index("headers"))


def _plain(name: object, cell: object) -> bool:
    """Whether a row's topic is its name's for sure: a name, and a header text that cannot
    hold a ``dddframe-`` header (a cluster or topic of its own), even escaped."""
    return (
        type(name) is str
        and bool(name)
        and (cell is None or (type(cell) is str and HEADER_PREFIX not in cell and "\\" not in cell))
    )


async def ensure_topics(cluster: KafkaCluster, topics: set[str]) -> None:
    """Create missing topics with the cluster's partition count (existing ones are kept)."""
    if not topics:
        return
    admin = AIOKafkaAdminClient(
        bootstrap_servers=cluster.bootstrap,
        request_timeout_ms=int(cluster.send_timeout * 1000),
        **cluster.client_options,
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = sorted(topics - existing)
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(t, cluster.partitions, cluster.replication_factor) for t in missing]
                )
    finally:
        await admin.close()


class Relay(OutboxRelay):
    """Moves committed outbox events to one cluster. Started by :class:`KafkaBus`.

    ``route`` names the cluster of an envelope; envelopes of other clusters are passed over
    (another relay, with its own position, sends them). ``clusters`` are the application's
    cluster names. An event Kafka would refuse as it is — its topic is not a valid topic name,
    it names a cluster the application does not have, its record is larger than
    ``max_request_size`` — is sent as poison (:meth:`OutboxRelay.refuse`) to the topic the
    listeners of its name read, so it is dead-lettered and the relay goes on.

    ``route_name``, when given, is ``route`` for an envelope whose headers name no cluster, by
    its name alone (``KafkaBus.cluster_of_name``): the relay then builds the records of such
    rows from their cells (:func:`~dddframe.bus.kafka.records.row_record`) without an envelope
    in between, and only the other rows (hostile cells, ``dddframe-`` headers, refused ones)
    and every row while a tracer records take the envelope's way. Both ways give the same
    records.
    """

    def __init__(
        self,
        cluster_name: str,
        cluster: KafkaCluster,
        database: Database,
        naming: TopicNaming,
        route: Callable[[Envelope], str],
        *,
        clusters: Collection[str] = (),
        route_name: Callable[[str], str] | None = None,
        owner: str,
        batch_size: int = 2000,
        poll_interval: float = 0.05,
        lease_ttl: float = 10.0,
        save_interval: float = 0.1,
    ) -> None:
        super().__init__(
            database,
            name=f"relay.kafka.{cluster_name}",
            lease=f"dddframe.relay:kafka.{cluster_name}",
            owner=owner,
            batch_size=min(batch_size, cluster.max_in_flight),
            poll_interval=poll_interval,
            lease_ttl=lease_ttl,
        )
        self.cluster_name = cluster_name
        self.cluster = cluster
        self.naming = naming
        self.route = route
        self.route_name = route_name
        self.clusters = frozenset(clusters) or frozenset({cluster_name})
        self.save_interval = save_interval
        self._read_upto = 0
        self._acked_upto = 0
        self._saved_at = 0.0
        self._inflight: collections.deque[tuple[int, int, asyncio.Future[list[Any]]]] = (
            collections.deque()
        )
        self._producer: AIOKafkaProducer | None = None
        self._topics: set[str] = set()
        self._partitioning = Partitioning()
        self._by_name: dict[str, str | None] = {}  # see _topic_by_name

    async def _connect(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(**self.cluster.relay_producer_options())
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
            log.info("%s: connected to %s", self.name, self.cluster.bootstrap)
        return self._producer

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def run_once(self) -> int:
        """Read and send one batch; returns how far the read moved (0: caught up). A broker
        error caused by the cluster's settings is raised as a ConfigurationError saying what
        to change (logged by the relay loop)."""
        try:
            return await self._send_once()
        except Exception as exc:
            hint = self.cluster.explain(exc)
            if hint is None:
                raise
            raise ConfigurationError(hint) from exc

    async def _send_once(self) -> int:
        """Read and send one batch; returns how far the read moved (0: caught up).

        Batches are pipelined: the next batch is read (:meth:`OutboxRelay.read_rows`) and sent
        while the broker acknowledges the previous one (at most ``max_in_flight`` records
        unacknowledged). A batch's position is stored only after it and every batch before it
        were acknowledged, at most every ``save_interval`` seconds while busy and at once when
        caught up.
        """
        producer = await self._connect()
        after = self._read_upto
        rows, upto = await self.read_rows(after)  # a backlog's next batch is read meanwhile
        if upto == after:
            await self._settle(0)
            await self._save()
            return 0
        futures, count = await self._produce(producer, rows)
        self._inflight.append((upto, count, asyncio.gather(*futures)))
        self._read_upto = upto
        await self._settle(self.cluster.max_in_flight - len(futures))
        if time.monotonic() - self._saved_at >= self.save_interval:
            await self._save()
        return upto - after

    async def _produce(
        self, producer: AIOKafkaProducer, rows: Sequence[Row[Any]]
    ) -> tuple[list[asyncio.Future[Any]], int]:
        """Produce the records of the rows this relay sends, in outbox order: the futures of
        their batches, and how many records they hold.

        Each record goes into its partition's batch as soon as it is built (see
        :mod:`dddframe.bus.kafka.batches`); the topics of the plain rows are made known first
        (created when new, their partitions fetched), any other as it comes. Building records
        awaits nothing, so the loop yields every few hundred rows: the read of the next batch,
        started ahead, sends its statements and takes its rows meanwhile instead of after."""
        batches = Batches(producer, self._partitioning)
        if self.route_name is not None and not tracing_enabled():
            by_name = self._by_name
            names = {n for n, cell in map(_name_and_headers, rows) if _plain(n, cell)}
            topics = {by_name[n] if n in by_name else self._topic_by_name(n) for n in names}
            await self._learn(producer, {t for t in topics if t})  # the rest as they come
            seen: HeaderCache = {}  # one command's events share their header text
            max_size = self.cluster.max_request_size
            for i, row in enumerate(rows):
                if not i & _YIELD_EVERY:  # the next batch's read (read ahead) goes on meanwhile
                    await asyncio.sleep(0)
                made = row_record(row, seen)
                if made is not None:
                    name, record, size = made
                    topic = by_name[name] if name in by_name else self._topic_by_name(name)
                    if topic is None:
                        continue  # another cluster's
                    if topic and size <= max_size:
                        if topic not in self._partitioning:
                            await self._learn(producer, {topic})
                        batches.add(topic, record)
                        continue
                routed = self._envelope_record(row)  # the envelope's way
                if routed is not None:
                    topic, _env, record = routed
                    if topic not in self._partitioning:
                        await self._learn(producer, {topic})
                    batches.add(topic, record)
        else:  # a span per record needs the envelope
            for i, row in enumerate(rows):
                if not i & _YIELD_EVERY:
                    await asyncio.sleep(0)
                routed = self._envelope_record(row)
                if routed is not None:
                    topic, env, record = routed
                    if topic not in self._partitioning:
                        await self._learn(producer, {topic})
                    with relay_span(env, self.name, topic):  # the hand-over to the producer
                        batches.add(topic, record)
        return await batches.send(), batches.count

    async def _learn(self, producer: AIOKafkaProducer, topics: set[str]) -> None:
        """Create the new ``topics`` and fetch the partitions of those not known yet."""
        new_topics = topics - self._topics
        if new_topics:
            await ensure_topics(self.cluster, new_topics)
            self._topics |= new_topics
        for topic in topics:
            if topic not in self._partitioning:
                self._partitioning.learn(topic, await producer.partitions_for(topic))

    def _topic_by_name(self, name: str) -> str | None:
        """The topic an event called ``name`` (its headers naming no cluster or topic) goes to
        as it is: None when it is another cluster's, "" when Kafka would refuse the topic (the
        envelope's way makes it poison). Remembered (bounded) per name."""
        assert self.route_name is not None
        topic: str | None = None
        if self.route_name(name) == self.cluster_name:
            topic = self.naming.topic_for(name)
            if topic not in self._topics and topic_problem(topic) is not None:
                topic = ""
        if len(self._by_name) >= _BY_NAME_MAX:
            self._by_name.clear()
        self._by_name[name] = topic
        return topic

    def _envelope_record(self, row: Row[Any]) -> tuple[str, Envelope, Record] | None:
        """The envelope's way for one row: decoded, routed, refused if Kafka would refuse it."""
        env = row_to_envelope(row._mapping)
        if self.route(env) != self.cluster_name:
            return None
        return self._routed(env)

    def _routed(self, env: Envelope) -> tuple[str, Envelope, Record] | None:
        """(topic, envelope, record) to produce for ``env``: as it is, or as poison when Kafka
        would refuse it as it is; None when no listener could read it anywhere."""
        problems: list[str] = []
        named = env.headers.get(ROUTE_CLUSTER)
        if named is not None and named not in self.clusters:
            problems.append(
                f"it names cluster {named[:100]!r}, which the application does not have "
                f"(it has {', '.join(sorted(self.clusters))})"
            )
        topic = self.naming.topic_of(env)
        problem = None if topic in self._topics else topic_problem(topic)  # known topics: valid
        if problem is not None:
            problems.append(problem)
            topic = self.naming.topic_for(env.name)  # where the listeners of its name read
            if topic_problem(topic) is not None:
                self.pass_over(env, f"{problem}, and so is the topic of its name")
                return None
        record, size = sized_record(env)
        too_big = size > self.cluster.max_request_size
        if too_big:
            problems.append(
                f"its record is {size} bytes, more than max_request_size "
                f"({self.cluster.max_request_size}): raise KafkaCluster(max_request_size=...) "
                "and the topic's max.message.bytes, then replay it from the outbox"
            )
        if problems:
            env = self.refuse(env, "; ".join(problems), drop_payload=too_big)
            record = to_record(env)
            if record_size(record) > self.cluster.max_request_size:  # the headers, then
                env = replace(env, headers={UNDECODABLE: env.headers[UNDECODABLE]})
                record = to_record(env)
        return topic, env, record

    async def _settle(self, keep: int) -> None:
        """Wait for acknowledgements until at most ``keep`` records are unacknowledged."""
        while self._inflight:
            upto, count, acked = self._inflight[0]
            if not acked.done():
                if sum(n for _, n, _ in self._inflight) <= keep:
                    return
                async with asyncio.timeout(self.cluster.send_timeout):
                    await acked
            acked.result()  # raises the send error, if any
            self._inflight.popleft()
            self._acked_upto = upto
            self.sent += count

    async def _save(self) -> None:
        await self.save_position(self._acked_upto)
        self._saved_at = time.monotonic()

    async def before_leaving(self) -> None:
        async with asyncio.timeout(2):  # what stays unacknowledged is resent by the next relay
            await self._settle(0)
            await self._save()

    def forget_inflight(self) -> None:
        """After a failure: resend everything after the stored position."""
        for _, _, acked in self._inflight:
            acked.cancel()
        self._partitioning.clear()
        self._inflight.clear()
        self._read_upto = self._acked_upto = self.position
