"""The Kafka application of the operator tests, loadable by the CLI
(``--app tests.kafka.ops_app:make_app``): tallies and one listener that fails for the tallies
in ``Failing.ids`` (dead-lettered at once: no retries). Configured through KAFKA_OPS_*."""

from __future__ import annotations

import os
from typing import ClassVar

from dddframe import Application, Module, NoRetry
from tests.kafka.kafka_app import Bumped, kafka_bus, tallies

BOOTSTRAP, PREFIX, DB_URL = "KAFKA_OPS_BOOTSTRAP", "KAFKA_OPS_PREFIX", "KAFKA_OPS_DB_URL"
SUB = "alerts.Failing.on_bumped"


class Failing:
    """Fails with a hostile error text for the tallies in ``ids``; records the others."""

    ids: ClassVar[set[str]] = set()
    error: ClassVar[str] = "mail server down"
    seen: ClassVar[list[tuple[str, int]]] = []

    async def on_bumped(self, event: Bumped) -> None:
        if event.tally_id in Failing.ids:
            raise RuntimeError(Failing.error)
        Failing.seen.append((event.tally_id, event.n))


def make_app(consume: bool = True) -> Application:
    alerts = Module("alerts")
    alerts.controller(Failing)
    alerts.listen("Tally:Bumped", "Failing.on_bumped", retry=NoRetry())
    bus = kafka_bus(os.environ[BOOTSTRAP], os.environ[PREFIX], relay=consume)
    return Application([tallies(), alerts], os.environ[DB_URL], bus=bus, consume=consume)
