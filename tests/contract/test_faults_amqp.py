"""The AMQP bus survives the shipped fault scenarios on RabbitMQ, each test in a vhost of its
own (made with rabbitmqctl), so closing "its" connections from the server touches nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import pytest

from dddframe.testing.contract.faults import (
    ConnectionDrop,
    CrashAfterDispatch,
    DatabaseRestart,
    RelaySigkill,
    WorkerSigkill,
)
from tests.contract.fault_apps.postgres_cluster import PrivateCluster, private_cluster
from tests.services import AMQP_URL, database_url, reachable, require


async def rabbitmqctl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()
    return out.decode()


class AmqpFaultHarness:
    name = "amqp-postgresql"
    bus_factory = "tests.contract.fault_apps.buses:amqp"
    broker_keeps_data = True

    def __init__(self, url: str, amqp_url: str = AMQP_URL) -> None:
        require("RabbitMQ", reachable(AMQP_URL, 5672), AMQP_URL)
        self.database_url = url
        self.amqp_url = amqp_url
        self.exchange = f"faults-{uuid.uuid4().hex[:8]}"
        self.vhost = unquote(urlsplit(amqp_url).path.lstrip("/")) or "/"

    def child_env(self) -> dict[str, str]:
        return {"FAULT_AMQP_URL": self.amqp_url, "FAULT_AMQP_EXCHANGE": self.exchange}

    async def drop_connections(self) -> None:
        """Close, from the server, every connection of this test's vhost (and no other)."""
        if self.vhost == "/":
            pytest.skip("closing connections needs a vhost of its own in DDDFRAME_AMQP_URL")
        require("rabbitmqctl", shutil.which("rabbitmqctl") is not None, "not on PATH")
        listed = await rabbitmqctl("list_connections", "--no-table-headers", "vhost", "pid")
        rows = [line.split("\t") for line in listed.splitlines() if "\t" in line]
        mine = [pid.strip() for vhost, pid in rows if vhost == self.vhost]
        assert len(mine) >= 2, f"expected the relay's and the worker's connections: {listed}"
        for pid in mine:
            await rabbitmqctl("close_connection", pid, "dddframe fault test: closed by the server")


@contextlib.asynccontextmanager
async def private_vhost() -> AsyncIterator[str]:
    """DDDFRAME_AMQP_URL with a new vhost the guest user may use; deleted afterwards. Without
    rabbitmqctl on this machine, DDDFRAME_AMQP_URL itself."""
    if shutil.which("rabbitmqctl") is None:
        yield AMQP_URL
        return
    vhost = f"dddframe-faults-{uuid.uuid4().hex[:8]}"
    await rabbitmqctl("add_vhost", vhost)
    try:
        user = urlsplit(AMQP_URL).username or "guest"
        await rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        parts = urlsplit(AMQP_URL)
        yield urlunsplit((parts.scheme, parts.netloc, "/" + vhost, parts.query, parts.fragment))
    finally:
        await rabbitmqctl("delete_vhost", vhost)


class TestAmqpFaults(WorkerSigkill, CrashAfterDispatch, RelaySigkill, ConnectionDrop):
    transport_label = "AMQP"

    @pytest.fixture
    async def fault_harness(self, tmp_path: Path) -> AsyncIterator[AmqpFaultHarness]:
        require("RabbitMQ", reachable(AMQP_URL, 5672), AMQP_URL)
        async with private_vhost() as url:
            yield AmqpFaultHarness(database_url("postgresql", tmp_path), url)


class AmqpOnPrivatePostgres(AmqpFaultHarness):
    def __init__(self, cluster: PrivateCluster) -> None:
        super().__init__(cluster.url)
        self.cluster = cluster

    async def restart_database(self) -> None:
        await self.cluster.restart_database()


class TestAmqpDatabaseRestart(DatabaseRestart):
    """The outbox's PostgreSQL restarts under the relay (in the writer) and the consumer."""

    transport_label = "AMQP"

    @pytest.fixture
    def fault_harness(self) -> Iterator[AmqpOnPrivatePostgres]:
        with private_cluster() as cluster:
            yield AmqpOnPrivatePostgres(cluster)
