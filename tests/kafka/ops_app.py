"""The Kafka application of the operator tests, loadable by the CLI
(``--app tests.kafka.ops_app:make_app``): tallies and one listener that fails for the tallies
in ``Failing.ids`` (dead-lettered at once: no retries). Configured through KAFKA_OPS_*."""

from __future__ import annotations

import os
from typing import ClassVar

from dddframe import Application, IntervalRetry, Module, NoRetry
from tests.kafka.kafka_app import Bumped, kafka_bus, tallies

BOOTSTRAP, PREFIX, DB_URL = "KAFKA_OPS_BOOTSTRAP", "KAFKA_OPS_PREFIX", "KAFKA_OPS_DB_URL"
SUB = "alerts.Failing.on_bumped"
SLOW = "slow.Failing.on_bumped"
SLOW_RETRY = 20.0  # seconds a failed record waits in the retry topic


class Failing:
    """Fails with a hostile error text for the tallies in ``ids``; records the others."""

    ids: ClassVar[set[str]] = set()
    error: ClassVar[str] = "mail server down"
    seen: ClassVar[list[tuple[str, int]]] = []

    async def on_bumped(self, event: Bumped) -> None:
        if event.tally_id in Failing.ids:
            raise RuntimeError(Failing.error)
        Failing.seen.append((event.tally_id, event.n))


def make_app(consume: bool = True, *, retrying: bool = False) -> Application:
    """``retrying``: the ``slow`` group instead, retrying through the retry topic."""
    listener = Module("slow" if retrying else "alerts")
    listener.controller(Failing)
    if retrying:
        retry = IntervalRetry(SLOW_RETRY, limit=1)
        listener.listen("Tally:Bumped", "Failing.on_bumped", retry=retry, retry_mode="topic")
    else:
        listener.listen("Tally:Bumped", "Failing.on_bumped", retry=NoRetry())
    bus = kafka_bus(os.environ[BOOTSTRAP], os.environ[PREFIX], relay=consume)
    return Application([tallies(), listener], os.environ[DB_URL], bus=bus, consume=consume)
