"""The child processes of a fault scenario: ``dddframe worker`` / ``dddframe relay`` on
:mod:`dddframe.testing.contract.fault_app`, started with the harness's environment, killed with
SIGKILL or stopped with SIGTERM; what they print is kept for the failure report."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
from collections.abc import Mapping
from typing import IO, Protocol

__all__ = ["APP_SPEC", "Children"]

APP_SPEC = "dddframe.testing.contract.fault_app:make_app"


class _Harness(Protocol):
    database_url: str
    bus_factory: str

    def child_env(self) -> Mapping[str, str]: ...


class Children:
    """The child processes of one scenario; what they print goes to files for the report."""

    def __init__(self, harness: _Harness) -> None:
        self.harness = harness
        self.procs: list[tuple[asyncio.subprocess.Process, IO[bytes]]] = []

    async def start(self, role: str, **env: str) -> asyncio.subprocess.Process:
        if role not in ("worker", "relay"):
            raise ValueError(f"role must be 'worker' or 'relay', not {role!r}")
        log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        full_env = {
            **os.environ,
            **self.harness.child_env(),
            "DDDFRAME_FAULT_DB": self.harness.database_url,
            "DDDFRAME_FAULT_BUS": self.harness.bus_factory,
            **env,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dddframe.cli", role, "--app", APP_SPEC,
            "--log-level", "WARNING",
            cwd=os.getcwd(), env=full_env, stdout=asyncio.subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        self.procs.append((proc, log))
        return proc

    async def kill(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()

    async def stop_all(self) -> None:
        for proc, _log in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), timeout=30)
                except TimeoutError:
                    await self.kill(proc)

    def close(self) -> None:
        for _proc, log in self.procs:
            log.close()

    def output(self) -> str:
        parts = []
        for proc, log in self.procs:
            log.seek(0)
            text = log.read()[-4000:].decode(errors="replace")
            parts.append(f"--- {proc.pid} exited {proc.returncode}:\n{text}")
        return "\n".join(parts)
