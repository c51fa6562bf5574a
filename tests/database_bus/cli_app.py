"""The application the dead-letter CLI tests load with ``--app``."""

from __future__ import annotations

import os

from dddframe import Application, NoRetry
from dddframe.bus.database import DatabaseBus
from tests.contract.model import Probe, contract_modules

PROBE = Probe()


def make_app(consume: bool = True) -> Application:
    bus = DatabaseBus(run_interval=0.05, retry=NoRetry())
    return Application(
        contract_modules(PROBE), os.environ["CLI_TEST_DB_URL"], bus=bus, consume=consume
    )
