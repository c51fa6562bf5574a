"""Which test services are reachable, and what a test does when one is not.

Locally a test needing an unreachable server is skipped with the reason; under
``DDDFRAME_REQUIRE_SERVICES=1`` (CI) it fails instead.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

POSTGRES_URL = os.environ.get(
    "DDDFRAME_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("DDDFRAME_MYSQL_URL", "mysql+aiomysql://root@127.0.0.1:3306/test")
AMQP_URL = os.environ.get("DDDFRAME_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REQUIRED = os.environ.get("DDDFRAME_REQUIRE_SERVICES") == "1"


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require(name: str, ok: bool, detail: str) -> None:
    """Skip (locally) or fail (CI) when a service is missing."""
    if ok:
        return
    message = f"{name} is not reachable ({detail})"
    if REQUIRED:
        pytest.fail(message + " and DDDFRAME_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


def database_url(kind: str, tmp_path: object) -> str:
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/test.db"
    if kind == "postgresql":
        require("PostgreSQL", reachable(POSTGRES_URL, 5432), POSTGRES_URL)
        return POSTGRES_URL
    if kind == "mariadb":
        require("MariaDB", reachable(MYSQL_URL, 3306), MYSQL_URL)
        return MYSQL_URL
    raise ValueError(kind)
