"""A process killed after commit and before delivery loses nothing: the next start delivers."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from dddframe.testing import reset_database
from tests.contract.model import Probe, contract_modules
from tests.core.conftest import AppFactory

ROOT = Path(__file__).resolve().parents[2]


async def test_sigkill_after_commit_then_restart_delivers_everything(
    any_db: str, make_app: AppFactory
) -> None:
    await reset_database(any_db)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.core.crash_child",
        any_db,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), timeout=60)
    assert child.returncode == -signal.SIGKILL, err.decode()
    counter_id = out.decode().split()[0]

    probe = Probe()
    async with make_app(any_db, contract_modules(probe), reset=False) as app:
        await probe.wait_for(3)
        await app.drain()
    assert [(agg, version) for agg, version, *_ in probe.seen] == [
        (counter_id, 2),
        (counter_id, 3),
        (counter_id, 4),
    ]
