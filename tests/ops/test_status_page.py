"""The status page: token protection, JSON and metrics over httpx, and replay in Chromium."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from dddframe import Application
from dddframe.errors import ConfigurationError
from dddframe.integrations.status_page import status_router
from tests.ops import ops_app
from tests.services import require

TOKEN = "test-token-0123456789"
SUB = "ops.Notifier.on_opened"


def make_api(app: Application, *, lifespan: bool) -> FastAPI:
    @asynccontextmanager
    async def run(_: FastAPI) -> AsyncIterator[None]:
        async with app:
            await app.create_schema()
            yield

    api = FastAPI(lifespan=run if lifespan else None)
    api.include_router(status_router(app, TOKEN))
    return api


@pytest.fixture
async def client(running_app: Application) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_api(running_app, lifespan=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://page") as c:
        yield c


def test_page_needs_a_real_token() -> None:
    app = Application(modules=[], database_url="sqlite+aiosqlite://")
    for bad in ("", "short"):
        with pytest.raises(ConfigurationError, match="at least 16 characters"):
            status_router(app, bad)


async def test_token_required_by_header_or_query(client: httpx.AsyncClient) -> None:
    assert (await client.get("/dddframe/")).status_code == 401
    assert (await client.get("/dddframe/?token=wrong-token-0123456789")).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await client.get("/dddframe/api/status", headers=wrong)).status_code == 401
    ok = await client.get("/dddframe/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    page = await client.get(f"/dddframe/?token={TOKEN}")
    assert page.status_code == 200 and "<svg" in page.text and SUB in page.text


async def test_json_status_replay_and_metrics(
    running_app: Application, client: httpx.AsyncClient
) -> None:
    for title in ("fine", "boom-a"):
        await running_app.engine.run(ops_app.OpenTicket(title=title))
    await running_app.drain()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    data = (await client.get("/dddframe/api/status", headers=auth)).json()
    (letter,) = data["dead_letter_list"]
    assert "mail server down for boom-a" in letter["error"]
    assert data["subscriptions"][0]["dead_letters"] == 1
    assert sum(b["events"] for b in data["throughput"]) == 2

    metrics = await client.get("/dddframe/metrics", headers=auth)
    assert f'dddframe_subscription_dead_letters{{subscription="{SUB}"}} 1.0' in metrics.text

    missing = await client.post("/dddframe/dead-letters/999999/replay", headers=auth)
    assert missing.status_code == 404
    ops_app.Notifier.broken = False
    replay = await client.post(f"/dddframe/dead-letters/{letter['id']}/replay", headers=auth)
    assert replay.json() == {"replayed": 1}
    await running_app.drain()
    assert "boom-a" in ops_app.Notifier.seen
    data = (await client.get("/dddframe/api/status", headers=auth)).json()
    assert data["dead_letter_list"] == [] and data["subscriptions"][0]["dead_letters"] == 0


# -- headless Chromium -------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(ops_url: str) -> Iterator[tuple[str, Application]]:
    """The ops application and its status page in a real uvicorn server (own thread)."""
    app = ops_app.make_app()
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(make_api(app, lifespan=True), port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(10)


def _open_ticket(title: str) -> None:
    """Run a command from outside the server, as another process of the application would
    (the served application's connections belong to uvicorn's event loop)."""
    other = ops_app.make_app(consume=False)

    async def run() -> None:
        async with other:
            await other.engine.run(ops_app.OpenTicket(title=title))

    asyncio.run(run())


def test_replay_in_headless_chromium(served: tuple[str, Application]) -> None:
    require(
        "Chromium",
        CHROMIUM is not None and CHROMEDRIVER is not None,
        "install Debian's chromium and chromium-driver; .ci/run does",
    )
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, _ = served
    _open_ticket("boom-browser")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="dddframe-chromium-")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        wait = WebDriverWait(driver, 20, poll_frequency=0.1)
        url = f"{base}/dddframe/?token={TOKEN}"

        def dead_rows() -> list[object]:
            driver.get(url)
            return list(driver.find_elements(By.CSS_SELECTOR, "tr.dead-letter"))

        rows = wait.until(lambda _: dead_rows())  # delivered and dead-lettered by the worker
        assert len(rows) == 1
        error = driver.find_element(By.CSS_SELECTOR, "tr.dead-letter pre.error").text
        assert "mail server down for boom-browser" in error
        assert driver.find_element(By.ID, "throughput").tag_name == "svg"
        ops_app.Notifier.broken = False
        driver.find_element(By.CSS_SELECTOR, "tr.dead-letter button").click()
        wait.until(lambda d: d.find_elements(By.ID, "no-dead-letters"))
        assert not driver.find_elements(By.CSS_SELECTOR, "tr.dead-letter")
        wait.until(lambda _: "boom-browser" in ops_app.Notifier.seen)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
