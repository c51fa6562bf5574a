"""A PostgreSQL cluster of the test's own (``pg_createcluster``), to restart under load.

Never the shared cluster: the fixture creates ``faults_<pid>`` on a free port with trust
authentication on localhost, starts it, and drops it at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from tests.services import require


def _run(*args: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr or done.stdout}")


def _versions() -> list[str]:
    try:
        return sorted(os.listdir("/etc/postgresql"))
    except OSError:
        return []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateCluster:
    def __init__(self, version: str, name: str, port: int) -> None:
        self.version, self.name, self.port = version, name, port
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"

    def ctl(self, action: str, *extra: str) -> None:
        _run("pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, action, *extra)

    def restart(self) -> None:
        self.ctl("restart", "-m", "fast")  # drops every connection, like a failover

    async def restart_database(self) -> None:
        """What a fault harness's ``restart_database()`` does with this cluster."""
        await asyncio.to_thread(self.restart)


@contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    tools = shutil.which("pg_createcluster") and shutil.which("pg_ctlcluster")
    versions = _versions()
    require(
        "a private PostgreSQL cluster",
        bool(tools and versions and os.geteuid() == 0),
        "needs pg_createcluster/pg_ctlcluster and root",
    )
    cluster = PrivateCluster(versions[-1], f"faults_{os.getpid()}", _free_port())
    _run(
        "pg_createcluster", cluster.version, cluster.name, "--port", str(cluster.port),
        "--", "--auth-host=trust", "--auth-local=trust",
    )  # fmt: skip
    try:
        cluster.ctl("start")
        yield cluster
    finally:
        _run("pg_dropcluster", "--stop", cluster.version, cluster.name)
