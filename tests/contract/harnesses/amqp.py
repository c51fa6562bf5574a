"""The AMQP bus runs the shared contract suite on real RabbitMQ (PostgreSQL outbox)."""

from __future__ import annotations

import uuid
from typing import Any

from dddframe.bus import EventBus, RetryPolicy
from dddframe.bus.amqp import AmqpBus
from tests.contract.conftest import OutboxHarnessBase
from tests.services import AMQP_URL, reachable, require


class AmqpHarness(OutboxHarnessBase):
    name = "amqp"

    def __init__(self, url: str, request: Any) -> None:
        super().__init__(url)
        require("RabbitMQ", reachable(AMQP_URL, 5672), AMQP_URL)
        self.exchange = f"contract-{uuid.uuid4().hex[:8]}"
        self.started = 0

    def bus(self, retry: RetryPolicy) -> EventBus:
        # Queue names come from the subscriptions, so the first start of a test empties them;
        # a restart within the test must find what the earlier process left.
        self.started += 1
        return AmqpBus(
            AMQP_URL,
            exchange=self.exchange,
            retry=retry,
            concurrency=4,
            poll_interval=0.05,
            queue_prefix=self.exchange + ".",
            purge_on_startup=self.started == 1,
        )


HARNESSES = {"amqp-postgresql": (AmqpHarness, "postgresql")}
