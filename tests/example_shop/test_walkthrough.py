"""docs/example_shop.md "Running it", with separate processes as written: the payment stub,
``dddframe schema --create``, the API as a pure writer (``DDDFRAME_SHOP_CONSUME=0 make serve
PORT=...``, a real uvicorn) and ``dddframe worker``, on SQLite with the database bus. An order
placed over HTTP ships; neither process logs a traceback or a locked database."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "example_shop.md"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def walkthrough() -> list[str]:
    """The commands of the page's walkthrough block, comments stripped."""
    match = re.search(r"<!-- walkthrough -->\n```\n(.*?)```", PAGE.read_text(), re.S)
    assert match, "docs/example_shop.md lost its walkthrough block"
    return [line.split("  #")[0].strip() for line in match[1].splitlines() if line.strip()]


def test_the_page_shows_the_commands_this_test_runs() -> None:
    assert walkthrough() == [
        ". .venv/bin/activate",
        "export DDDFRAME_SHOP_BUS=database",
        "python -m example_shop.payment_stub &",
        "dddframe schema --create --app example_shop.app:app",
        "DDDFRAME_SHOP_CONSUME=0 make serve PORT=8000 &",
        "dddframe worker --app example_shop.app:app",
    ]


class Processes:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.running: list[tuple[str, subprocess.Popen[str]]] = []

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            args, cwd=ROOT, env={**self.env, **env}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        self.running.append((name, proc))
        return proc

    def stop(self) -> dict[str, str]:
        outputs = {}
        for name, proc in reversed(self.running):
            if proc.poll() is None:
                os.killpg(proc.pid, 15)  # make and the uvicorn it started
            try:
                out, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                out, _ = proc.communicate()
            outputs[name] = out
        return outputs


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    env = {
        **os.environ,
        "DDDFRAME_SHOP_BUS": "database",
        "DDDFRAME_SHOP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/example_shop.db",
        "DDDFRAME_SHOP_SETTINGS_FILE": str(tmp_path / "none.env"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    procs = Processes(env)
    yield procs
    procs.stop()


def wait_until_up(http: httpx.Client, path: str, proc: subprocess.Popen[str]) -> None:
    for _ in range(600):
        try:
            if http.get(path).status_code < 500:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.05)
    raise AssertionError(f"{path} did not come up")


def test_the_api_and_a_worker_as_separate_processes(processes: Processes) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    stub_port, api_port = free_port(), free_port()
    processes.env["DDDFRAME_SHOP_PAYMENT_URL"] = f"http://127.0.0.1:{stub_port}"
    stub = processes.start(
        "stub", sys.executable, "-m", "example_shop.payment_stub", "--port", str(stub_port)
    )
    schema = subprocess.run(
        [sys.executable, "-m", "dddframe.cli", "schema", "--create", "--app",
         "example_shop.app:app"],
        cwd=ROOT, env=processes.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert schema.returncode == 0 and "schema created" in schema.stdout, schema.stderr
    # `make serve` as the page says; -o keeps make from reinstalling the virtualenv.
    api = processes.start(
        "api", "make", "-s", "serve", f"PORT={api_port}", f"PY={sys.executable}",
        "-o", ".venv/.installed-stamp", DDDFRAME_SHOP_CONSUME="0",
    )  # fmt: skip
    worker = processes.start(
        "worker", sys.executable, "-m", "dddframe.cli", "worker", "--app", "example_shop.app:app"
    )
    with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as http:
        wait_until_up(http, "/openapi.json", api)
        json = {"sku": "MUG", "name": "Mug", "price": "8.50"}
        assert http.post("/products", json=json).status_code == 201
        assert http.post("/products/MUG/stock", json={"quantity": 5}).status_code == 200
        r = http.post("/orders", json={"lines": [{"sku": "MUG", "quantity": 2}]})
        assert r.status_code == 201, r.text
        order = f"/orders/{r.json()['order_id']}"
        deadline = time.monotonic() + 60
        while http.get(order).json()["status"] != "shipped" and time.monotonic() < deadline:
            assert worker.poll() is None and stub.poll() is None
            time.sleep(0.1)
        body = http.get(order).json()
    outputs = processes.stop()
    assert body["status"] == "shipped", (body, outputs)
    assert body["payment"] == "charged"
    assert "worker running: bus=database" in outputs["worker"], outputs["worker"]
    for name in ("api", "worker"):
        assert "Traceback" not in outputs[name], outputs[name]
        assert "database is locked" not in outputs[name], outputs[name]
