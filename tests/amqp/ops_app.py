"""The AMQP application of the operator tests, loadable by the CLI
(``--app tests.amqp.ops_app:make_app``): the tickets of tests.ops.ops_app on RabbitMQ, with an
exchange and queues private to the test (AMQP_OPS_EXCHANGE) and the database AMQP_OPS_DB_URL."""

from __future__ import annotations

import os

from dddframe import Application
from dddframe.bus.amqp import AmqpBus
from tests.ops.ops_app import ops
from tests.services import AMQP_URL

EXCHANGE, DB_URL = "AMQP_OPS_EXCHANGE", "AMQP_OPS_DB_URL"


def make_app(consume: bool = True, relay: bool | None = None) -> Application:
    exchange = os.environ[EXCHANGE]
    bus = AmqpBus(
        AMQP_URL,
        exchange=exchange,
        queue_prefix=exchange + ".",
        poll_interval=0.05,
        relay=consume if relay is None else relay,
    )
    return Application([ops], os.environ[DB_URL], bus=bus, consume=consume)
