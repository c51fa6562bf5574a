"""The application the AMQP dead-letter CLI test loads with ``--app``."""

from __future__ import annotations

import os

from dddframe import Application, NoRetry
from dddframe.bus.amqp import AmqpBus
from tests.contract.model import Probe, contract_modules
from tests.services import AMQP_URL

PROBE = Probe()


def make_app(consume: bool = True) -> Application:
    exchange = os.environ["AMQP_CLI_EXCHANGE"]
    bus = AmqpBus(
        AMQP_URL,
        exchange=exchange,
        queue_prefix=exchange + ".",
        poll_interval=0.05,
        retry=NoRetry(),
    )
    return Application(
        contract_modules(PROBE), os.environ["AMQP_CLI_DB_URL"], bus=bus, consume=consume
    )
