"""The AMQP application of the operator tests, loadable by the CLI
(``--app tests.amqp.ops_app:make_app``): the tickets of tests.ops.ops_app on RabbitMQ, with an
exchange and queues private to the test (AMQP_OPS_EXCHANGE) and the database AMQP_OPS_DB_URL."""

from __future__ import annotations

import os

from dddframe import Application, IntervalRetry, Module
from dddframe.bus.amqp import AmqpBus
from tests.ops.ops_app import Notifier, ops
from tests.services import AMQP_URL

EXCHANGE, DB_URL = "AMQP_OPS_EXCHANGE", "AMQP_OPS_DB_URL"


SLOW = "slow.Notifier.on_opened"


def slow() -> Module:
    """The notifier again, retried after a minute: a failure waits in a delay queue."""
    module = Module("slow")
    module.controller(Notifier)
    module.listen("Ops:TicketOpened", "Notifier.on_opened", retry=IntervalRetry(60, limit=1))
    return module


def make_app(
    consume: bool = True, relay: bool | None = None, *, retrying: bool = False
) -> Application:
    exchange = os.environ[EXCHANGE]
    bus = AmqpBus(
        AMQP_URL,
        exchange=exchange,
        queue_prefix=exchange + ".",
        poll_interval=0.05,
        relay=consume if relay is None else relay,
    )
    modules = [ops, slow()] if retrying else [ops]
    return Application(modules, os.environ[DB_URL], bus=bus, consume=consume)


def make_retrying_app(consume: bool = True) -> Application:
    """``make_app`` with the ``slow`` subscription too."""
    return make_app(consume, retrying=True)
