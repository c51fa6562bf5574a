"""The Kafka bus survives the shipped fault scenarios on the tansu test broker."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from dddframe.testing.contract.faults import (
    ConnectionDrop,
    CrashAfterDispatch,
    RelaySigkill,
    WorkerSigkill,
)
from tests.kafka import broker
from tests.services import database_url


class KafkaFaultHarness:
    name = "kafka-postgresql"
    bus_factory = "tests.contract.fault_apps.buses:kafka"

    def __init__(self, url: str, bootstrap: str) -> None:
        self.database_url = url
        self.bootstrap = bootstrap
        self.prefix = broker.unique("f") + "."

    def child_env(self) -> dict[str, str]:
        return {"FAULT_KAFKA_BOOTSTRAP": self.bootstrap, "FAULT_KAFKA_PREFIX": self.prefix}


class RestartableBroker(KafkaFaultHarness):
    """A tansu broker of this test alone, killed and restarted on the same port."""

    name = "kafka-postgresql"
    broker_keeps_data = False  # tansu keeps topics in memory: a restart starts empty

    def __init__(self, url: str) -> None:
        self.port = broker.free_port()
        self.proc, address = broker.start_tansu(self.port)
        super().__init__(url, address)

    async def drop_connections(self) -> None:
        self.proc.send_signal(signal.SIGKILL)  # every client connection drops at once
        await asyncio.to_thread(self.proc.wait)
        self.proc, _address = await asyncio.to_thread(broker.start_tansu, self.port)

    def stop(self) -> None:
        broker.stop(self.proc)


class TestKafkaFaults(WorkerSigkill, CrashAfterDispatch, RelaySigkill):
    @pytest.fixture
    def fault_harness(self, tmp_path: Path, kafka_bootstrap: str) -> KafkaFaultHarness:
        return KafkaFaultHarness(database_url("postgresql", tmp_path), kafka_bootstrap)


class TestKafkaBrokerRestart(ConnectionDrop):
    @pytest.fixture
    def fault_harness(self, tmp_path: Path) -> Iterator[RestartableBroker]:
        if broker.REAL_CLUSTER:
            pytest.skip("restarts a tansu broker of its own; not done on a real cluster")
        harness = RestartableBroker(database_url("postgresql", tmp_path))
        try:
            yield harness
        finally:
            harness.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return broker.bootstrap()
