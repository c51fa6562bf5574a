"""``dddframe projections status|rebuild``: JSON and table output, resume and abandon, exit
codes, and stored text shown as data."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from dddframe.cli import app as cli
from dddframe.outbox.tables import projections_table
from tests.projections.cli_app import URL_ENV
from tests.projections.conftest import AppFactory
from tests.projections.model import OrderTotals, contents, place, projection_module
from tests.projections.test_rebuild import Interrupt, interrupt_after


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli, ["projections", *args, "--app", "tests.projections.cli_app:make_app"]
    )
    return result.exit_code, result.stdout, result.stderr


async def test_status_rebuild_resume_and_abandon_from_the_command_line(
    sqlite_db: str, make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_ENV, sqlite_db)
    async with make_app(sqlite_db, [projection_module(reference=False)]) as app:
        for i in range(4):
            await place(app, f"o{i}", [i, 1])
        await app.drain()
        before = await contents(app, OrderTotals)
        code, out, _ = await asyncio.to_thread(_cli, "status", "--json")
        (status,) = json.loads(out)["projections"]
        assert (code, status["name"], status["position"], status["lag_events"]) == (
            0,
            "OrderTotals",
            12,
            0,
        )
        code, out, err = await asyncio.to_thread(
            _cli, "rebuild", "OrderTotals", "--json", "--batch-size", "5"
        )
        assert code == 0, err
        assert json.loads(out) == {
            "name": "OrderTotals",
            "generation": 2,
            "previous": 1,
            "built_through": 12,
            "applied": 12,
        }
        assert await contents(app, OrderTotals) == before
        with pytest.raises(Interrupt):
            await app.projections.rebuild(
                OrderTotals, batch_size=3, progress=interrupt_after(1, [])
            )
        code, _, err = await asyncio.to_thread(_cli, "rebuild", "OrderTotals")
        assert code == 1 and "--resume" in err and "--abandon" in err
        code, _, err = await asyncio.to_thread(
            _cli, "rebuild", "OrderTotals", "--resume", "--abandon"
        )
        assert code == 2
        code, out, err = await asyncio.to_thread(_cli, "rebuild", "OrderTotals", "--resume")
        assert code == 0 and "generation 3 is active" in out, err
        with pytest.raises(Interrupt):
            await app.projections.rebuild(
                OrderTotals, batch_size=3, progress=interrupt_after(1, [])
            )
        async with app.database.engine.begin() as conn:  # stored text is data, not terminal codes
            await conn.execute(update(projections_table).values(rebuild_state="\x1b[2J[red]x"))
        code, out, _ = await asyncio.to_thread(_cli, "status")
        assert code == 0 and "OrderTotals" in out and "\x1b" not in out and "[red]x" in out
        code, out, _ = await asyncio.to_thread(_cli, "status", "--json")
        assert json.loads(out)["projections"][0]["rebuild"]["state"] == "\x1b[2J[red]x"
        async with app.database.engine.begin() as conn:
            await conn.execute(update(projections_table).values(rebuild_state="running"))
        code, out, _ = await asyncio.to_thread(
            _cli, "rebuild", "OrderTotals", "--abandon", "--json"
        )
        assert (code, json.loads(out)) == (0, {"abandoned": 4})
        assert await contents(app, OrderTotals) == before
