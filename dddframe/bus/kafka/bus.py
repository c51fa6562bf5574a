"""The Kafka bus: an outbox relay to Kafka and consumer groups bound to listeners by name.

See docs/guarantees/kafka.md and docs/adr/0200-kafka-topics-offsets-and-dead-letters.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from dddframe.bus.kafka.config import KafkaCluster, clusters_from_env
from dddframe.bus.kafka.consumer import GroupConsumer, group_start
from dddframe.bus.kafka.dead_letters import KafkaDeadLetters
from dddframe.bus.kafka.drain import drain
from dddframe.bus.kafka.handling import RecordHandler, RetryMode
from dddframe.bus.kafka.options import KafkaListenerOptions
from dddframe.bus.kafka.push import push_deliver
from dddframe.bus.kafka.records import Headers
from dddframe.bus.kafka.relay import Relay, ensure_topics
from dddframe.bus.kafka.retry_state import RetryState
from dddframe.bus.kafka.status import KafkaStatus, SubscriptionTopics
from dddframe.bus.kafka.topics import ROUTE_CLUSTER, ROUTE_TOPIC, TopicNaming
from dddframe.bus.protocol import BusRuntime
from dddframe.bus.retry import ExponentialRetry, RetryPolicy
from dddframe.bus.subscription import Subscription
from dddframe.domain.envelope import Envelope
from dddframe.domain.events import DomainEvent
from dddframe.domain.limits import KAFKA_TOPIC_MAX, check_headers, check_name
from dddframe.errors import ConfigurationError, NotStarted
from dddframe.outbox.leases import process_owner
from dddframe.outbox.status import SystemStatus
from dddframe.outbox.tables import OUTBOX_CHANNEL
from dddframe.outbox.wakeup import PostgresWakeup

__all__ = ["KafkaBus"]

log = logging.getLogger("dddframe.bus.kafka")


class KafkaBus:
    """Events go outbox -> relay -> Kafka -> consumer groups -> listeners bound by name.

    >>> bus = KafkaBus(clusters={"default": KafkaCluster(bootstrap="127.0.0.1:9092")},
    ...                topic_prefix="shop.")
    >>> bus.name, bus.naming.topic_for("Order:Placed")
    ('kafka', 'shop.order')

    ``clusters``: named clusters; the first is the default (``bus="kafka"`` builds one from
    DDDFRAME_KAFKA_BOOTSTRAP). ``routes``: event or message name -> cluster name (freedom's
    SelectClient); ``listen(..., cluster=...)`` picks the cluster a listener consumes a name
    from. ``topic_prefix``/``topics``: the naming rule and per-name overrides. ``group_prefix``
    is put before every subscription group to form the Kafka group id. ``retry_mode``:
    ``"blocking"`` (retry in place, order kept) or ``"topic"`` (non-blocking retry topic
    ``retry_prefix + group``), per listener with ``listen(..., retry_mode=...)``;
    ``retry_count`` caps the attempts (0: dead-letter at the first failure); then the record
    goes to ``fail_prefix + group``. ``relay``: run the outbox relay in this process (a lease
    keeps one active per cluster; ``relay_batch`` records per read, the position stored at most
    every ``relay_save_interval`` seconds while busy). ``push_url``: POST every record there
    instead of calling the listener (also per listener: ``listen(..., push_url=...)``).
    """

    name = "kafka"
    listener_options = KafkaListenerOptions

    def __init__(
        self,
        clusters: Mapping[str, KafkaCluster] | None = None,
        *,
        routes: Mapping[str, str] | None = None,
        topic_prefix: str = "",
        topics: Mapping[str, str] | None = None,
        group_prefix: str = "",
        retry: RetryPolicy | None = None,
        retry_mode: RetryMode = "blocking",
        retry_count: int | None = None,
        retry_prefix: str = "retry-",
        fail_prefix: str = "fail-",
        relay: bool = True,
        relay_batch: int = 2000,
        relay_save_interval: float = 0.1,
        poll_interval: float = 0.05,
        lease_ttl: float = 10.0,
        push_url: str | None = None,
        push_timeout: float = 10.0,
        consumer_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.clusters: dict[str, KafkaCluster] = dict(
            clusters if clusters is not None else clusters_from_env()
        )
        if not self.clusters:
            raise ConfigurationError("KafkaBus needs at least one cluster")
        self.default_cluster = next(iter(self.clusters))
        self.routes = dict(routes or {})
        for name, cluster in self.routes.items():
            self._check_cluster(cluster, f"routes[{name!r}]")
        if retry_mode not in ("blocking", "topic"):
            raise ConfigurationError(
                f"retry_mode must be 'blocking' or 'topic', not {retry_mode!r}"
            )
        if retry_count is not None and retry_count < 0:
            raise ConfigurationError("retry_count must be >= 0 (0 disables retries)")
        self.naming = TopicNaming(
            topic_prefix, topics, retry_prefix=retry_prefix, fail_prefix=fail_prefix
        )
        self.group_prefix = group_prefix
        self.default_retry: RetryPolicy = retry or ExponentialRetry(
            base=0.5, max_delay=60, limit=10
        )
        self.retry_mode: RetryMode = retry_mode
        self.retry_count = retry_count
        self.relay_enabled = relay
        self.relay_batch = relay_batch
        self.relay_save_interval = relay_save_interval
        self.poll_interval = poll_interval
        self.lease_ttl = lease_ttl
        self.push_url = push_url
        self.push_timeout = push_timeout
        self.consumer_options = dict(consumer_options or {})
        self.owner = process_owner()
        self.relays: dict[str, Relay] = {}
        self.consumers: list[GroupConsumer] = []
        self.dead_letters = KafkaDeadLetters(
            self.clusters, self.naming, self._groups_by_cluster, self._send_once
        )
        self._status = KafkaStatus(
            self.clusters,
            self.naming,
            lambda: self.runtime.database,
            self._subscription_topics,
            self.dead_letters,
        )
        self._runtime: BusRuntime | None = None
        self._producers: dict[str, AIOKafkaProducer] = {}
        self._producer_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._http: httpx.AsyncClient | None = None
        self._wakeup: PostgresWakeup | None = None
        self._local_commit = 0.0

    def _check_cluster(self, cluster: object, where: str) -> str:
        if not isinstance(cluster, str) or cluster not in self.clusters:
            raise ConfigurationError(
                f"{where} names cluster {cluster!r}; the bus has {', '.join(self.clusters)}."
            )
        return cluster

    # -- routing ----------------------------------------------------------------------------

    def group_id(self, group: str) -> str:
        return self.group_prefix + group

    def cluster_of(self, envelope: Envelope) -> str:
        """The cluster an envelope is produced to (a stored header naming a cluster the bus
        does not have counts for nothing: its relay sends the event as poison)."""
        named = envelope.headers.get(ROUTE_CLUSTER)
        if named in self.clusters:
            return named
        return self.cluster_of_name(envelope.name)

    def cluster_of_name(self, name: str) -> str:
        """The cluster events called ``name`` are produced to when their headers name none."""
        return self.routes.get(name, self.default_cluster)

    def _consumed_on(self, sub: Subscription, name: str) -> str:
        explicit = sub.options.get("cluster")
        if explicit is not None:
            return self._check_cluster(explicit, f"listen({name!r}, cluster=...)")
        return self.routes.get(name, self.default_cluster)

    def _plan(self, subs: Sequence[Subscription]) -> dict[tuple[str, str], set[str]]:
        """(cluster, group id) -> the topics its listeners need."""
        plan: dict[tuple[str, str], set[str]] = {}
        for sub in subs:
            for name in sub.event_names:
                key = (self._consumed_on(sub, name), self.group_id(sub.group))
                plan.setdefault(key, set()).add(self.naming.topic_for(name))
        return plan

    def _groups_by_cluster(self) -> dict[str, list[str]]:
        if self._runtime is None:
            raise NotStarted("The Kafka bus is not started: start the Application first.")
        out: dict[str, list[str]] = {}
        for cluster, group in self._plan(self._runtime.subscriptions):
            out.setdefault(cluster, []).append(group)
        return out

    def _subscription_topics(self) -> list[SubscriptionTopics]:
        """Where every subscription of the application reads (consumed here or not)."""
        out: list[SubscriptionTopics] = []
        for sub in self.runtime.subscriptions:
            by_cluster: dict[str, set[str]] = {}
            for name in sub.event_names:
                by_cluster.setdefault(self._consumed_on(sub, name), set()).add(
                    self.naming.topic_for(name)
                )
            for cname, topics in sorted(by_cluster.items()):
                group_id = self.group_id(sub.group)
                out.append(SubscriptionTopics(sub.name, cname, group_id, frozenset(topics)))
        return out

    async def status(self) -> SystemStatus:
        """Committed offsets against the end of each subscription's topics, its retries and
        dead letters (see :mod:`dddframe.bus.kafka.status`)."""
        return await self._status.read()

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def runtime(self) -> BusRuntime:
        if self._runtime is None:
            raise NotStarted("The Kafka bus is not started: start the Application first.")
        return self._runtime

    async def start(self, runtime: BusRuntime) -> None:
        self._runtime = runtime
        if self.relay_enabled:
            for cname, cluster in self.clusters.items():
                relay = Relay(
                    cname,
                    cluster,
                    runtime.database,
                    self.naming,
                    self.cluster_of,
                    clusters=self.clusters,
                    route_name=self.cluster_of_name,
                    owner=self.owner,
                    batch_size=self.relay_batch,
                    poll_interval=self.poll_interval,
                    lease_ttl=self.lease_ttl,
                    save_interval=self.relay_save_interval,
                )
                self.relays[cname] = relay
                self._tasks.append(asyncio.create_task(relay.run(), name=f"dddframe-{relay.name}"))
            if self.relays and runtime.database.dialect == "postgresql":
                # Commits in other processes wake the relays through the outbox trigger.
                self._wakeup = PostgresWakeup(runtime.database, OUTBOX_CHANNEL)
                self._wakeup.listen(self._remote_commit)
        subs = [self._with_push(s) for s in runtime.active_subscriptions()]
        for (cname, group_id), topics in self._plan(subs).items():
            group_subs = [
                s
                for s in subs
                if self.group_id(s.group) == group_id
                and any(self._consumed_on(s, n) == cname for n in s.event_names)
            ]
            handler = RecordHandler(
                group_id,
                group_subs,
                runtime.registry,
                self.naming,
                self._sender(cname),
                retry_mode=self.retry_mode,
                retry_count=self.retry_count,
                retry_state=RetryState(lambda: self.runtime.database),
            )
            retry_topic = self.naming.retry_topic(group_id)
            needed = {*topics, retry_topic, self.naming.dead_letter_topic(group_id)}
            consumer = GroupConsumer(
                cname,
                self.clusters[cname],
                group_id,
                {*topics, retry_topic},
                handler,
                prepare=functools.partial(ensure_topics, self.clusters[cname], needed),
                on_assign=functools.partial(self._load_held, cname, group_id, handler),
                options=self.consumer_options,
                begin_at=group_start(group_id, group_subs),
            )
            consumer.start()
            self.consumers.append(consumer)

    async def _load_held(self, cluster: str, group_id: str, handler: RecordHandler) -> None:
        if handler.retry_state is not None:  # blocking retries a stopped consumer left
            await handler.retry_state.load(handler.subscriptions)
        handler.begin_load()
        try:
            letters = await self.dead_letters.scan(cluster=cluster, group=group_id)
        except BaseException:
            handler.end_load()
            raise
        handler.load_held((d.subscription, d.ordering_key, d.event_id) for d in letters)

    def _with_push(self, sub: Subscription) -> Subscription:
        url = sub.options.get("push_url", self.push_url)
        if not url:
            return sub
        if self._http is None:
            self._http = httpx.AsyncClient()
        return dataclasses.replace(
            sub, deliver=push_deliver(str(url), self._http, self.push_timeout)
        )

    async def stop(self) -> None:
        if self._wakeup is not None:
            await self._wakeup.close()
            self._wakeup = None
        for consumer in self.consumers:
            await consumer.stop()
        self.consumers.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self.relays.clear()
        for producer in self._producers.values():
            with contextlib.suppress(Exception):
                await producer.stop()
        self._producers.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def notify(self, envelopes: Sequence[Envelope]) -> None:
        if envelopes:
            self._local_commit = time.monotonic()
        for relay in self.relays.values():
            relay.wake.set()

    def _remote_commit(self) -> None:
        # A process that commits itself wakes its relay on every commit already; extra passes
        # for the NOTIFY of the same commits would only compete with the writers.
        if time.monotonic() - self._local_commit > self.poll_interval:
            self.notify([])

    # -- producing (retry and dead-letter topics, replay) --------------------------------------

    async def _producer(self, cluster: str) -> AIOKafkaProducer:
        async with self._producer_lock:
            producer = self._producers.get(cluster)
            if producer is None:
                producer = AIOKafkaProducer(**self.clusters[cluster].producer_options())
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producers[cluster] = producer
            return producer

    async def _send_once(
        self, cluster: str, topic: str, key: bytes | None, value: bytes | None, headers: Headers
    ) -> None:
        producer = await self._producer(cluster)
        try:
            async with asyncio.timeout(self.clusters[cluster].send_timeout):
                await producer.send_and_wait(topic, value, key=key, headers=headers)
        except Exception:
            self._producers.pop(cluster, None)
            with contextlib.suppress(Exception):
                await producer.stop()
            raise

    def _sender(self, cluster: str) -> Any:
        async def send(topic: str, key: bytes | None, value: bytes | None, h: Headers) -> None:
            backoff = 0.1
            while True:  # a record is never dropped between topics: retry until acknowledged
                try:
                    await self._send_once(cluster, topic, key, value, h)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning(
                        "producing to %s failed (%s); retrying in %.1fs", topic, exc, backoff
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)

        return send

    # -- what users call ----------------------------------------------------------------------

    async def publish(
        self,
        name: str | DomainEvent,
        payload: Mapping[str, Any] | None = None,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        cluster: str | None = None,
    ) -> Envelope:
        """A direct message to the topic of ``name`` (freedom's
        ``NewMsg(...).SetHeaders(...).Publish()``), through the outbox: inside a unit of work it
        commits with it. The correlation id and trace context of the current command or event
        travel with it. ``cluster`` picks the cluster it is produced to.

        >>> # await app.bus.publish("event-sell", {"id": 1}, headers={"x-action": "buy"})
        """
        topic = name.event_name() if isinstance(name, DomainEvent) else name
        extra = check_headers(headers, "bus.publish(headers=...)")
        if isinstance(topic, str) and topic:  # where listeners of it read
            route = self.naming.topic_for(topic)
            extra[ROUTE_TOPIC] = check_name(
                route, "Kafka topic", KAFKA_TOPIC_MAX, where="publish()"
            )
        if cluster is not None:
            extra[ROUTE_CLUSTER] = self._check_cluster(cluster, "publish(cluster=...)")
        return await self.runtime.engine.publish(name, payload, key=key, headers=extra)

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until the relays sent every committed event and this process's consumers
        processed everything on their partitions (retries included), and nothing the
        listeners committed meanwhile (the next step of a chain) is left to relay."""
        await drain(self, timeout)
