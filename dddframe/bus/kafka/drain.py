"""``KafkaBus.drain()``: wait until what was committed went through Kafka to the listeners.

Done means three things at once: every relay stored a position at the outbox head, every
partition this process consumes was processed up to its high watermark (retries included), and
the outbox head did not move meanwhile (a listener that committed the next step of a chain
started the wait again). High watermarks come from fetch responses received after the relays
caught up, not from ListOffsets, which some Kafka-compatible brokers (tansu 0.6) answer wrongly.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from aiokafka import TopicPartition
from sqlalchemy import select

from dddframe.outbox.reader import OutboxReader
from dddframe.outbox.sequencer import Sequencer
from dddframe.outbox.tables import positions_table

if TYPE_CHECKING:
    from dddframe.bus.kafka.bus import KafkaBus

__all__ = ["drain"]


async def drain(bus: KafkaBus, timeout: float = 30.0) -> None:
    """Wait until the relays sent every committed event and this process's consumers
    processed everything on their partitions, and nothing the listeners committed meanwhile
    is left to relay; TimeoutError after ``timeout`` seconds, saying what was pending."""
    deadline = time.monotonic() + timeout
    while True:
        head = await _relays_caught_up(bus, deadline, timeout)
        since = int(time.time() * 1000) + 50  # fetch responses after the relays caught up
        previous: dict[TopicPartition, int] | None = None
        while True:
            ends, pending = await _consumer_state(bus, since)
            if not pending and ends == previous:
                break
            previous = None if pending else ends
            _check_deadline(deadline, timeout, f"consumers pending: {pending}")
            await asyncio.sleep(0.02)
        if await _outbox_head(bus) == head:
            return


async def _outbox_head(bus: KafkaBus) -> int:
    async with bus.runtime.database.connect() as conn:
        await Sequencer().sequence(conn)
        return await OutboxReader().head(conn)


async def _relays_caught_up(bus: KafkaBus, deadline: float, timeout: float) -> int:
    """Wait until every relay reached the outbox head; returns that head."""
    names = [f"relay.kafka.{c}" for c in bus.clusters]
    while True:
        async with bus.runtime.database.connect() as conn:
            await Sequencer().sequence(conn)
            head = await OutboxReader().head(conn)
            rows = await conn.execute(
                select(positions_table.c.subscription, positions_table.c.position).where(
                    positions_table.c.subscription.in_(names)
                )
            )
            positions = {r[0]: int(r[1]) for r in rows}
        behind = [n for n in names if positions.get(n, 0) < head]
        if not behind:
            return head
        _check_deadline(deadline, timeout, f"relays behind head {head}: {behind}")
        bus.notify([])
        await asyncio.sleep(0.01)


def _check_deadline(deadline: float, timeout: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise TimeoutError(f"drain() gave up after {timeout}s; {what}")


async def _consumer_state(bus: KafkaBus, since: int) -> tuple[dict[TopicPartition, int], list[str]]:
    """High watermarks of this process's partitions, and those not processed up to them."""
    ends: dict[TopicPartition, int] = {}
    pending: list[str] = []
    for gc in bus.consumers:
        consumer = gc.consumer
        if consumer is None or not gc.joined.is_set():
            pending.append(f"{gc.group_id} (joining)")
            continue
        for tp in sorted(gc.assignment()):
            high, polled = consumer.highwater(tp), consumer.last_poll_timestamp(tp)
            if high is None or polled is None or polled < since:
                pending.append(f"{tp} (not fetched yet)")
                continue
            ends[tp] = high
            part = gc.partitions.get(tp)
            if part is None:  # nothing fetched since it was assigned
                done = await consumer.position(tp) >= high
            else:
                done = not part.unfinished and part.processed is not None and part.processed >= high
            if not done:
                pending.append(str(tp))
    return ends, pending
