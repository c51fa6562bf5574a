"""Child process for the crash test: commit three events, then SIGKILL itself before delivery."""

from __future__ import annotations

import asyncio
import sys

from dddframe import Application
from dddframe.bus.inprocess import InProcessBus
from dddframe.testing import FaultInjector
from tests.contract.model import CreateCounter, Increment, Probe, contract_modules


async def main(url: str) -> None:
    faults = FaultInjector()
    # A long poll interval so nothing is delivered by a timer before the kill.
    bus = InProcessBus(poll_interval=60, faults=faults)
    async with Application(contract_modules(Probe()), database_url=url, bus=bus) as app:
        await app.create_schema()
        counter_id = await app.engine.run(CreateCounter())
        print(counter_id, flush=True)
        faults.crash_after_commit()
        await app.engine.run(Increment(counter_id=counter_id, times=3))
    raise SystemExit("unreachable: the process should have been killed after commit")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
