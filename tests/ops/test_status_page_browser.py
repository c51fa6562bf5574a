"""The status page in headless Chromium, as an operator meets it: log in with the form, see
the dead letters (hostile error texts stay text), replay one through its confirmation step,
log out; at 420 px wide the page does not scroll sideways. No URL ever carries the token.

Set DDDFRAME_SCREENSHOTS=<dir> to keep the screenshots for a look."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from dddframe import Application
from tests.ops import ops_app
from tests.ops.test_status_page import HOSTILE, TOKEN, make_api
from tests.services import require

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def access_log() -> Iterator[list[str]]:
    """The lines uvicorn writes to its access log (every request's method and URL)."""
    handler = _Lines()
    logger = logging.getLogger("uvicorn.access")
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def served(ops_url: str, access_log: list[str]) -> Iterator[tuple[str, Application]]:
    """The ops application and its status page in a real uvicorn server (own thread), with
    its access log on."""
    app = ops_app.make_app()
    port = _free_port()
    config = uvicorn.Config(
        make_api(app, lifespan=True), port=port, log_config=None, access_log=True
    )
    logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    server = uvicorn.Server(config)
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


def _open_tickets(*titles: str) -> None:
    """Run commands from outside the server, as another process of the application would
    (the served application's connections belong to uvicorn's event loop)."""
    other = ops_app.make_app(consume=False)

    async def run() -> None:
        async with other:
            for title in titles:
                await other.engine.run(ops_app.OpenTicket(title=title))

    asyncio.run(run())


@pytest.fixture
def driver() -> Iterator[Any]:
    require(
        "Chromium",
        CHROMIUM is not None and CHROMEDRIVER is not None,
        "install Debian's chromium and chromium-driver; .ci/run does",
    )
    webdriver = pytest.importorskip("selenium.webdriver")
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
        "--hide-scrollbars",
        "--window-size=1200,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    browser = webdriver.Chrome(options=options, service=service)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(path))
    keep = os.environ.get("DDDFRAME_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    return path


def _narrow(driver: Any, width: int = 420) -> None:
    """Resize until the page's viewport (not the window) is ``width`` CSS pixels wide."""
    driver.set_window_size(width, 1400)
    inner = driver.execute_script("return window.innerWidth")
    driver.set_window_size(width + (width - inner), 1400)
    assert driver.execute_script("return window.innerWidth") == width


def _no_sideways_scroll(driver: Any) -> None:
    scroll, inner = driver.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert scroll <= inner, f"the page is {scroll} px wide in a {inner} px viewport"


def test_log_in_see_dead_letters_and_replay_with_confirmation(
    served: tuple[str, Application], driver: Any, tmp_path: Path, access_log: list[str]
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, _ = served
    _open_tickets("fine", "boom-browser", *HOSTILE)
    wait = WebDriverWait(driver, 20, poll_frequency=0.1)
    urls: list[str] = []

    def at(url: str) -> None:
        driver.get(url)
        urls.append(driver.current_url)

    # not logged in: the page sends the browser to the login form
    at(f"{base}/dddframe/")
    assert driver.current_url == f"{base}/dddframe/login"
    driver.find_element(By.ID, "token").send_keys("wrong-token-0123456789")
    driver.find_element(By.ID, "login").click()
    assert "not right" in driver.find_element(By.ID, "login-error").text
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.ID, "login").click()
    wait.until(lambda d: d.current_url == f"{base}/dddframe/")
    cookie = driver.get_cookie("dddframe_status_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]
    assert driver.execute_script("return document.cookie") == ""  # HttpOnly: not for scripts

    def dead_rows() -> list[Any]:
        at(f"{base}/dddframe/")
        rows = driver.find_elements(By.CSS_SELECTOR, "tr.dead-letter")
        return list(rows) if len(rows) == 1 + len(HOSTILE) else []

    rows = wait.until(lambda _: dead_rows())  # delivered and dead-lettered by the worker
    errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "tr.dead-letter pre.error")]
    assert any("mail server down for boom-browser" in e for e in errors)
    for title in HOSTILE:  # shown as text, not run or rendered
        assert any(title in e for e in errors), (title, errors)
    assert not driver.find_elements(By.CSS_SELECTOR, "tr.dead-letter script, tr.dead-letter img")
    assert len(driver.find_elements(By.TAG_NAME, "svg")) == 1  # only the chart
    assert driver.find_element(By.ID, "throughput").tag_name == "svg"
    ticks = driver.find_elements(By.CSS_SELECTOR, "#throughput text.tick")
    assert len(ticks) == 3 and "time (UTC)" in driver.find_element(By.ID, "throughput").text

    # text columns left-aligned, numbers right-aligned; the stylesheet loaded under the CSP
    def align(selector: str) -> str:
        found = driver.find_element(By.CSS_SELECTOR, selector)
        return str(driver.execute_script("return getComputedStyle(arguments[0]).textAlign", found))

    assert align("#subscriptions td[data-label=subscription]") == "left"
    assert align("#subscriptions th") == "left"
    assert align("#dead-letters td[data-label=error]") == "left"
    assert align("#subscriptions td[data-label=lag]") == "right"
    _screenshot(driver, tmp_path, "status-wide")

    # replay: the list links to a confirmation page; nothing changes until it is confirmed
    (row,) = [r for r in rows if "boom-browser" in r.text]
    letter_id = row.get_attribute("id").removeprefix("dead-letter-")
    ops_app.Notifier.broken = False
    driver.find_element(By.ID, f"replay-{letter_id}").click()
    assert driver.current_url == f"{base}/dddframe/dead-letters/{letter_id}"
    urls.append(driver.current_url)
    assert "mail server down for boom-browser" in driver.find_element(By.ID, "error").text
    driver.find_element(By.ID, "cancel").click()
    assert len(driver.find_elements(By.CSS_SELECTOR, "tr.dead-letter")) == 1 + len(HOSTILE)
    driver.find_element(By.ID, f"replay-{letter_id}").click()
    _narrow(driver)
    _no_sideways_scroll(driver)
    _screenshot(driver, tmp_path, "confirm-420")
    driver.set_window_size(1200, 900)
    driver.find_element(By.ID, "confirm-replay").click()
    wait.until(lambda d: d.find_elements(By.ID, "notice"))
    urls.append(driver.current_url)
    assert f"Dead letter {letter_id} replayed" in driver.find_element(By.ID, "notice").text
    wait.until(lambda _: "boom-browser" in ops_app.Notifier.seen)

    def replayed() -> bool:
        at(f"{base}/dddframe/")
        return not driver.find_elements(By.ID, f"dead-letter-{letter_id}")

    wait.until(lambda _: replayed())

    # at 420 px: cards instead of wide tables, nothing sticks out
    _narrow(driver)
    _no_sideways_scroll(driver)
    chart = driver.find_element(By.ID, "throughput").rect
    assert chart["x"] >= 0 and chart["x"] + chart["width"] <= 420
    assert driver.find_element(By.CSS_SELECTOR, "#dead-letters thead").is_displayed() is False
    _screenshot(driver, tmp_path, "status-420")
    at(f"{base}/dddframe/login")
    _no_sideways_scroll(driver)
    _screenshot(driver, tmp_path, "login-420")
    driver.set_window_size(1200, 900)

    # log out: back to the form, and the page wants a login again
    at(f"{base}/dddframe/")
    driver.find_element(By.ID, "logout").click()
    wait.until(lambda d: d.current_url == f"{base}/dddframe/login")
    at(f"{base}/dddframe/")
    assert driver.current_url == f"{base}/dddframe/login"
    assert driver.get_cookie("dddframe_status_session") is None
    assert all(TOKEN not in url and "token=" not in url for url in urls), urls
    # what the server logged: every request of the session, none with the token
    assert any("POST /dddframe/login" in line for line in access_log), access_log
    assert any(f"POST /dddframe/dead-letters/{letter_id}/replay" in line for line in access_log)
    assert any("GET /dddframe/static/status.css" in line for line in access_log)
    assert not [line for line in access_log if TOKEN in line or "token=" in line]
