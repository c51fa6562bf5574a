"""Dead letters kept in Kafka: the dead-letter topic of each consumer group (``fail_prefix``).

``bus.dead_letters`` is the transport's :class:`~dddframe.bus.protocol.DeadLetters`
(list/get/count/replay/purge, oldest first by the time the record was dead-lettered), so
``app.dead_letters``, ``dddframe dead-letters ...`` and the status page work unchanged.
Kafka cannot delete single records, so replaying or purging a dead letter appends a
*resolution marker* to the same topic; listing reads the topic and leaves
resolved letters out. Replay re-publishes the record to the group's retry topic, addressed to
the subscription that gave up on it, due at once, as attempt 1.

Ids pack (cluster, topic, partition, offset) into one int; they are stable while the set of
clusters and groups of the application stays the same.
"""

from __future__ import annotations

import builtins
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from dddframe.bus.codec import HEADER_PREFIX, encode_envelope
from dddframe.bus.dead_letters import (
    DeadLetter,
    DeadLetterOperations,
    DeadLetterSelection,
    Parked,
    oldest_first,
)
from dddframe.bus.kafka.config import KafkaCluster
from dddframe.bus.kafka.handling import (
    ATTEMPT,
    DLQ,
    NOT_BEFORE,
    RELEASED_BY,
    RETRY,
    STATE,
    SUBSCRIPTION,
)
from dddframe.bus.kafka.records import Headers, from_record
from dddframe.bus.kafka.topics import TopicNaming
from dddframe.domain.envelope import Envelope
from dddframe.errors import PoisonEvent
from dddframe.outbox.tables import PARKED_DEAD, PARKED_WAITING

__all__ = ["KafkaDeadLetter", "KafkaDeadLetters", "read_to_end"]

RESOLVES = DLQ + "resolves"
_OFFSETS = 10**9
_PARTITIONS = 4096
_TOPICS = 256

SendTo = Callable[[str, str, bytes | None, bytes | None, Headers], Awaitable[None]]
"""(cluster, topic, key, value, headers): produce and wait for the acknowledgement."""


async def read_to_end(
    consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition], timeout: float
) -> AsyncIterator[tuple[TopicPartition, ConsumerRecord[Any, Any]]]:
    """Every record of ``tps`` from the beginning up to their end as of the call.

    The end is the high watermark that fetch responses carry, not ListOffsets (which some
    Kafka-compatible brokers, tansu 0.6 among them, answer wrongly): a partition is finished
    when a fetch answered after the call shows its position at the high watermark.
    """
    consumer.assign(list(tps))
    await consumer.seek_to_beginning(*tps)
    since = int(time.time() * 1000)
    deadline = time.monotonic() + timeout
    remaining = set(tps)
    while remaining:
        if time.monotonic() > deadline:
            raise TimeoutError(f"reading {sorted(map(str, remaining))} to the end timed out")
        batch = await consumer.getmany(*remaining, timeout_ms=200)
        for tp, records in batch.items():
            for r in records:
                yield tp, r
        for tp in list(remaining):
            high, polled = consumer.highwater(tp), consumer.last_poll_timestamp(tp)
            fresh = high is not None and polled is not None and polled >= since
            if fresh and await consumer.position(tp) >= (high or 0):
                remaining.discard(tp)


@dataclass(frozen=True, slots=True)
class KafkaDeadLetter(Parked):
    """A dead letter read from a dead-letter topic, with where it is stored."""

    cluster: str
    topic: str
    partition: int
    offset: int
    group: str
    record_key: bytes | None
    record_value: bytes | None
    record_headers: tuple[tuple[str, bytes], ...]


def _text(headers: dict[str, bytes], key: str, default: str = "") -> str:
    v = headers.get(key)
    return v.decode(errors="replace") if v is not None else default


def _event_id(headers: dict[str, bytes]) -> str:
    """The event id a record's headers carry ("" when none, or not a UUID)."""
    try:
        return str(uuid.UUID(_text(headers, HEADER_PREFIX + "event-id")))
    except ValueError:
        return ""


def _state(headers: dict[str, bytes]) -> str:
    """``waiting`` for a record parked behind a dead letter of its aggregate, else ``dead``
    (records written before the state header: their HeldBack reason tells)."""
    state = headers.get(STATE)
    if state is not None:
        return PARKED_WAITING if state == b"waiting" else PARKED_DEAD
    return PARKED_WAITING if _text(headers, DLQ + "reason").startswith("HeldBack") else PARKED_DEAD


def _behind(head: KafkaDeadLetter, d: KafkaDeadLetter) -> bool:
    """Whether ``d`` waits behind the dead letter ``head``."""
    return d.state == PARKED_WAITING and (d.cluster, d.group, d.subscription, d.ordering_key) == (
        head.cluster,
        head.group,
        head.subscription,
        head.ordering_key,
    )


class KafkaDeadLetters(DeadLetterOperations):
    """The operator API over the dead-letter topics of every group on every cluster."""

    def __init__(
        self,
        clusters: dict[str, KafkaCluster],
        naming: TopicNaming,
        groups: Callable[[], dict[str, builtins.list[str]]],
        send: SendTo,
        *,
        scan_timeout: float = 30.0,
    ) -> None:
        self.clusters = clusters
        self.naming = naming
        self._groups = groups  # cluster -> group ids (known once the bus started)
        self._send = send
        self.scan_timeout = scan_timeout

    def _topics(self) -> builtins.list[tuple[int, str, int, str, str]]:
        """(cluster index, cluster, topic index, topic, group id) of every dead-letter topic."""
        out = []
        groups = self._groups()
        for ci, cname in enumerate(self.clusters):
            for ti, group in enumerate(sorted(groups.get(cname, []))):
                out.append((ci, cname, ti, self.naming.dead_letter_topic(group), group))
        return out

    async def scan(
        self, *, cluster: str | None = None, group: str | None = None
    ) -> builtins.list[KafkaDeadLetter]:
        """Every unresolved dead letter (of one cluster and group id if given), in topic order."""
        letters: builtins.list[KafkaDeadLetter] = []
        resolved: set[tuple[str, str, int, int]] = set()
        by_cluster: dict[str, builtins.list[tuple[int, int, str, str]]] = {}
        for ci, cname, ti, topic, group_id in self._topics():
            if cluster in (None, cname) and group in (None, group_id):
                by_cluster.setdefault(cname, []).append((ci, ti, topic, group_id))
        for cname, topics in by_cluster.items():
            settings = self.clusters[cname]
            consumer = AIOKafkaConsumer(
                bootstrap_servers=settings.bootstrap,
                enable_auto_commit=False,
                group_id=None,
                **settings.client_options,
            )
            await consumer.start()
            try:
                existing = await consumer.topics()
                index = {t: (ci, ti, g) for ci, ti, t, g in topics if t in existing}
                tps = [
                    TopicPartition(t, p)
                    for t in index
                    for p in sorted(consumer.partitions_for_topic(t) or ())
                ]
                if not tps:
                    continue
                async for tp, r in read_to_end(consumer, tps, self.scan_timeout):
                    ci, ti, group = index[tp.topic]
                    marker = dict(r.headers or ()).get(RESOLVES)
                    if marker is not None:
                        p, _, o = marker.decode().partition(":")
                        resolved.add((cname, tp.topic, int(p), int(o)))
                    else:
                        letters.append(self._letter(cname, ci, ti, group, r))
            finally:
                await consumer.stop()
        return [d for d in letters if (d.cluster, d.topic, d.partition, d.offset) not in resolved]

    @staticmethod
    def _letter(
        cname: str, ci: int, ti: int, group: str, r: ConsumerRecord[Any, Any]
    ) -> KafkaDeadLetter:
        raw = {k: v or b"" for k, v in r.headers or ()}
        event_id = _event_id(raw)
        try:
            env = from_record(r.headers, r.value)
            event_id = str(env.event_id)
        except PoisonEvent:
            # An undecodable record keeps what its headers say: the real event id when they
            # carry one, else none (an empty id, never an invented one).
            env = Envelope(
                event_id=uuid.UUID(event_id) if event_id else uuid.UUID(int=0),
                name=_text(raw, "dddframe-name", "<not a dddframe record>"),
                payload_json=(r.value or b"").decode(errors="replace"),
                aggregate_type=_text(raw, "dddframe-aggregate-type") or None,
                aggregate_id=_text(raw, "dddframe-aggregate-id") or None,
            )
        at = datetime.fromtimestamp(r.timestamp / 1000, UTC)
        origin = (
            f"{_text(raw, DLQ + 'topic')}[{_text(raw, DLQ + 'partition')}]"
            f"@{_text(raw, DLQ + 'offset')}"
        )
        attempts = _text(raw, DLQ + "attempts", "0")
        return KafkaDeadLetter(
            id=((ci * _TOPICS + ti) * _PARTITIONS + r.partition) * _OFFSETS + r.offset,
            subscription=_text(raw, DLQ + "subscription"),
            event_id=event_id,
            position=None,
            ordering_key=env.ordering_key,
            name=env.name,
            state=_state(raw),
            attempts=int(attempts) if attempts.isdigit() else 0,
            next_attempt_at=None,
            error=_text(raw, DLQ + "reason"),
            traceback=f"original record {origin}; dead-letter record {r.topic}[{r.partition}]"
            f"@{r.offset} on cluster {cname}",
            created_at=at,
            updated_at=at,
            envelope_text=encode_envelope(env),
            cluster=cname,
            topic=r.topic,
            partition=r.partition,
            offset=r.offset,
            group=group,
            record_key=r.key,
            record_value=r.value,
            record_headers=tuple((k, v or b"") for k, v in r.headers or ()),
        )

    # -- the DeadLetters primitives ---------------------------------------------------------

    async def select(
        self, selection: DeadLetterSelection, *, limit: int | None = None
    ) -> builtins.list[DeadLetter]:
        """Unresolved dead letters, oldest first (a selection of another ``state`` finds none:
        retries in flight live in the retry topic, not here)."""
        found = oldest_first(d for d in await self.scan() if selection.matches(d))
        return list(found[:limit] if limit is not None else found)

    async def _selected(
        self, selection: DeadLetterSelection
    ) -> tuple[builtins.list[KafkaDeadLetter], builtins.list[KafkaDeadLetter]]:
        """The selected letters, and the waiting letters behind the selected dead ones."""
        letters = await self.scan()
        chosen = oldest_first(d for d in letters if selection.matches(d))
        heads = [d for d in chosen if d.state == PARKED_DEAD]
        picked = {d.id for d in chosen}
        behind = oldest_first(
            d for d in letters if d.id not in picked and any(_behind(h, d) for h in heads)
        )
        return chosen, behind

    async def _send_to_retry(self, d: KafkaDeadLetter, released_by: str | None) -> None:
        target = d.subscription if not d.subscription.endswith(".*") else ""
        headers: Headers = [
            *((k, v) for k, v in d.record_headers if not k.startswith((RETRY, DLQ))),
            (DLQ + "topic", next((v for k, v in d.record_headers if k == DLQ + "topic"), b"")),
            *((k, v) for k, v in d.record_headers if k in (DLQ + "partition", DLQ + "offset")),
            (SUBSCRIPTION, target.encode()),
            (ATTEMPT, b"1"),
            (NOT_BEFORE, str(int(time.time() * 1000)).encode()),
        ]
        if released_by is not None:
            headers.append((RELEASED_BY, released_by.encode()))
        await self._send(
            d.cluster, self.naming.retry_topic(d.group), d.record_key, d.record_value, headers
        )

    async def _release(
        self, heads: Sequence[KafkaDeadLetter], behind: Sequence[KafkaDeadLetter]
    ) -> None:
        """Send the waiting letters behind ``heads`` back, in order, lifting the hold."""
        for d in behind:
            head = next(h for h in heads if _behind(h, d))
            await self._send_to_retry(d, head.event_id)
            await self._resolve(d, "released")

    async def _resolve(self, d: KafkaDeadLetter, action: str) -> None:
        await self._send(
            d.cluster,
            d.topic,
            d.record_key,
            b"",
            [(RESOLVES, f"{d.partition}:{d.offset}".encode()), (DLQ + "action", action.encode())],
        )

    async def replay_selection(self, selection: DeadLetterSelection) -> int:
        """Re-publish dead letters to their group's retry topic (attempts start again at 1),
        then mark them resolved; the letters waiting behind them follow, in order. Returns how
        many dead letters were replayed."""
        letters, behind = await self._selected(selection)
        for d in letters:
            await self._send_to_retry(d, None)
            await self._resolve(d, "replay")
        await self._release(letters, behind)
        return len(letters)

    async def purge_selection(self, selection: DeadLetterSelection) -> int:
        """Mark dead letters resolved without delivering them; the letters waiting behind them
        are released (delivered, in order). Returns how many dead letters were purged."""
        letters, behind = await self._selected(selection)
        for d in letters:
            await self._resolve(d, "purge")
        await self._release(letters, behind)
        return len(letters)
