"""The status page over HTTP: bearer tokens for scripts, a login form and session cookie for
browsers, CSRF on every POST, security headers on every response, ids that cannot be found
answered 404/422, hostile stored texts kept inert, and the token never in a URL."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from dddframe import Application
from dddframe.errors import ConfigurationError
from dddframe.integrations.status_page import SECURITY_HEADERS, status_router
from tests.ops import ops_app

TOKEN = "test-token-0123456789"
SUB = "ops.Notifier.on_opened"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HTML = {"Accept": "text/html"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
HOSTILE = [
    "boom<script>alert(1)</script>",
    "boom<img src=x onerror=alert(2)>",
    'boom"><svg onload=alert(3)>',
]


def make_api(app: Application, *, lifespan: bool) -> FastAPI:
    @asynccontextmanager
    async def run(_: FastAPI) -> AsyncIterator[None]:
        async with app:
            await app.create_schema()
            yield

    api = FastAPI(lifespan=run if lifespan else None)
    api.include_router(status_router(app, TOKEN))
    return api


def _client(app: Application, base_url: str = "http://page") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=make_api(app, lifespan=False))
    return httpx.AsyncClient(transport=transport, base_url=base_url)


@pytest.fixture
async def client(running_app: Application) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(running_app) as c:
        yield c


async def _dead(app: Application, *titles: str) -> list[int]:
    for title in titles:
        await app.engine.run(ops_app.OpenTicket(title=title))
    await app.drain()
    return [d.id for d in await app.dead_letters.list()]


async def _login(client: httpx.AsyncClient) -> str:
    """Log in with the form; returns the page's CSRF token (the client keeps the cookie)."""
    r = await client.post("/dddframe/login", content=f"token={TOKEN}", headers=FORM)
    assert r.status_code == 303 and r.headers["location"] == "/dddframe/"
    page = await client.get("/dddframe/", headers=HTML)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found[1]


def _assert_secured(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (response.status_code, response.url, name)
    csp = response.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "script-src" not in csp  # default-src 'none'
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp


def test_page_needs_a_real_token_and_sane_settings() -> None:
    app = Application(modules=[], database_url="sqlite+aiosqlite://")
    for bad in ("", "short"):
        with pytest.raises(ConfigurationError, match="at least 16 characters"):
            status_router(app, bad)
    for prefix in ("", "/", "dddframe", "/dddframe/", "/a b"):
        with pytest.raises(ConfigurationError, match="prefix"):
            status_router(app, TOKEN, prefix=prefix)
    with pytest.raises(ConfigurationError, match="minutes"):
        status_router(app, TOKEN, minutes=0)
    with pytest.raises(ConfigurationError, match="session_seconds"):
        status_router(app, TOKEN, session_seconds=5)


async def test_scripts_use_the_bearer_header_and_a_token_in_the_url_is_refused(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/dddframe/api/status")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in r.json()["detail"]
    for wrong in ("Bearer nope", "Basic " + TOKEN, f"Bearer {TOKEN}x"):
        r = await client.get("/dddframe/api/status", headers={"Authorization": wrong})
        assert r.status_code == 401
    assert (await client.get("/dddframe/api/status", headers=AUTH)).status_code == 200
    page = await client.get("/dddframe/", headers=AUTH)
    assert page.status_code == 200 and "<svg" in page.text and SUB in page.text
    # the old ?token= is refused even when right: it is written to every access log
    r = await client.get(f"/dddframe/?token={TOKEN}")
    assert r.status_code == 400 and "does not go in a URL" in r.json()["detail"]
    assert TOKEN not in r.text
    # a browser without a session is sent to the login form
    r = await client.get("/dddframe/", headers=HTML)
    assert (r.status_code, r.headers["location"]) == (303, "/dddframe/login")


async def test_json_status_replay_and_metrics(
    running_app: Application, client: httpx.AsyncClient
) -> None:
    (letter_id,) = await _dead(running_app, "fine", "boom-a")
    data = (await client.get("/dddframe/api/status", headers=AUTH)).json()
    (letter,) = data["dead_letter_list"]
    assert letter["id"] == letter_id and "mail server down for boom-a" in letter["error"]
    assert data["subscriptions"][0]["dead_letters"] == 1
    assert sum(b["events"] for b in data["throughput"]) == 2

    metrics = await client.get("/dddframe/metrics", headers=AUTH)
    assert f'dddframe_subscription_dead_letters{{subscription="{SUB}"}} 1.0' in metrics.text

    ops_app.Notifier.broken = False
    replay = await client.post(f"/dddframe/dead-letters/{letter_id}/replay", headers=AUTH)
    assert replay.json() == {"replayed": 1}  # bearer: no CSRF token needed, JSON answer
    await running_app.drain()
    assert "boom-a" in ops_app.Notifier.seen
    data = (await client.get("/dddframe/api/status", headers=AUTH)).json()
    assert data["dead_letter_list"] == [] and data["subscriptions"][0]["dead_letters"] == 0


async def test_login_sets_a_safe_session_cookie_and_logout_ends_it(
    running_app: Application,
) -> None:
    async with _client(running_app) as client:
        wrong = await client.post("/dddframe/login", content="token=nope", headers=FORM)
        assert wrong.status_code == 401 and "not right" in wrong.text
        assert "set-cookie" not in wrong.headers
        r = await client.post("/dddframe/login", content=f"token={TOKEN}", headers=FORM)
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"httponly", "samesite", "path", "max-age"} <= flags
        assert "samesite=strict" in cookie.lower() and "path=/dddframe" in cookie.lower()
        assert "secure" not in flags  # plain HTTP: a Secure cookie would never come back
        value = client.cookies["dddframe_status_session"]
        assert TOKEN not in value and len(value) > 40

        csrf = await _login(client)
        value = client.cookies["dddframe_status_session"]  # the second login's session
        refused = await client.post("/dddframe/logout", headers=HTML)
        assert refused.status_code == 403
        out = await client.post("/dddframe/logout", content=f"csrf={csrf}", headers=FORM)
        assert (out.status_code, out.headers["location"]) == (303, "/dddframe/login")
        assert 'dddframe_status_session=""' in out.headers["set-cookie"]
        # the old cookie is no longer accepted, even if a browser kept it
        client.cookies.set("dddframe_status_session", value, path="/dddframe")
        assert (await client.get("/dddframe/api/status")).status_code == 401
        client.cookies.set("dddframe_status_session", value[:-3] + "abc", path="/dddframe")
        assert (await client.get("/dddframe/api/status")).status_code == 401  # forged

    async with _client(running_app, "https://page") as tls:
        r = await tls.post("/dddframe/login", content=f"token={TOKEN}", headers=FORM)
        assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()


async def test_a_session_post_without_its_csrf_token_is_refused(
    running_app: Application,
) -> None:
    (letter_id,) = await _dead(running_app, "boom-csrf")
    ops_app.Notifier.broken = False
    url = f"/dddframe/dead-letters/{letter_id}/replay"
    async with _client(running_app) as other:
        other_csrf = await _login(other)
    async with _client(running_app) as client:
        csrf = await _login(client)
        assert other_csrf != csrf  # one token per session
        for body, extra in (
            ("", {}),
            ("csrf=wrong", {}),
            (f"csrf={other_csrf}", {}),
            (f"csrf={csrf}", {"Sec-Fetch-Site": "cross-site"}),
        ):
            r = await client.post(url, content=body, headers={**FORM, **HTML, **extra})
            assert r.status_code == 403, (body, extra, r.text)
        assert [d.id for d in await running_app.dead_letters.list()] == [letter_id]
        r = await client.post(url, content=f"csrf={csrf}", headers=FORM)
        assert (r.status_code, r.headers["location"]) == (303, f"/dddframe/?replayed={letter_id}")
        await running_app.drain()
        assert "boom-csrf" in ops_app.Notifier.seen
        page = await client.get(r.headers["location"], headers=HTML)
        assert f"Dead letter {letter_id} replayed" in page.text and "no-dead-letters" in page.text


async def test_ids_that_cannot_be_found_answer_404_or_422_never_500(
    running_app: Application,
) -> None:
    await _dead(running_app, "boom-ids")
    async with _client(running_app) as client:
        csrf = await _login(client)
        cases = {
            "abc": 422,
            "1.5": 422,
            "1e3": 422,
            "%20": 422,
            "-1": 404,
            "999999": 404,
            str(2**63): 404,
            "9" * 40: 404,
        }
        for raw, code in cases.items():
            r = await client.get(f"/dddframe/dead-letters/{raw}", headers=HTML)
            assert r.status_code == code, (raw, r.text)
            assert "<script" not in r.text
            r = await client.post(f"/dddframe/dead-letters/{raw}/replay", headers=AUTH)
            assert r.status_code == code, (raw, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            r = await client.post(
                f"/dddframe/dead-letters/{raw}/replay", content=f"csrf={csrf}", headers=FORM
            )
            assert r.status_code == code, (raw, r.text)
            _assert_secured(r)
        assert len(await running_app.dead_letters.list()) == 1


async def test_security_headers_on_every_response_errors_included(
    running_app: Application,
) -> None:
    (letter_id,) = await _dead(running_app, "boom-headers")
    async with _client(running_app) as client:
        seen = [
            await client.get("/dddframe/api/status"),  # 401 problem+json
            await client.get("/dddframe/", headers=HTML),  # 303 to the login form
            await client.get("/dddframe"),  # 308 to the slash
            await client.get("/dddframe/login"),
            await client.get("/dddframe/static/status.css"),
            await client.post("/dddframe/login", content="token=x", headers=FORM),  # 401
            await client.get(f"/dddframe/?token={TOKEN}"),  # 400
            await client.get("/dddframe/no-such-page", headers=AUTH),  # 404
            await client.put("/dddframe/", headers=AUTH),  # 404
            await client.get("/dddframe/dead-letters/x", headers=AUTH),  # 422
            await client.post("/dddframe/login", content=f"token={TOKEN}", headers=FORM),
            await client.get("/dddframe/", headers=HTML),
            await client.get(f"/dddframe/dead-letters/{letter_id}", headers=HTML),
            await client.post(f"/dddframe/dead-letters/{letter_id}/replay", headers=FORM),  # 403
            await client.get("/dddframe/api/status", headers=AUTH),
            await client.get("/dddframe/metrics", headers=AUTH),
        ]
        codes = [r.status_code for r in seen]
        assert codes == [401, 303, 308, 200, 200, 401, 400, 404, 404, 422, 303] + [200] * 2 + [
            403,
            200,
            200,
        ]
        css = seen[4]
        assert css.headers["content-type"].startswith("text/css") and "@media" in css.text
    stopped = Application(modules=[ops_app.ops], database_url="sqlite+aiosqlite://")
    async with _client(stopped) as broken:  # never started: every read fails inside
        r = await broken.get("/dddframe/api/status", headers=AUTH)
        assert r.status_code == 500 and "server log" in r.json()["detail"]
        seen.append(r)
    for r in seen:
        _assert_secured(r)


async def test_the_token_never_appears_in_urls_links_or_served_html(
    running_app: Application,
) -> None:
    (letter_id,) = await _dead(running_app, "boom-links")
    async with _client(running_app) as client:
        responses = [await client.get("/dddframe/login")]
        r = await client.post("/dddframe/login", content=f"token={TOKEN}", headers=FORM)
        responses.append(r)
        responses.append(await client.get("/dddframe/", headers=HTML))
        responses.append(await client.get(f"/dddframe/dead-letters/{letter_id}", headers=HTML))
        responses.append(await client.get("/dddframe/dead-letters/77777", headers=HTML))
        responses.append(await client.get("/dddframe/", headers=AUTH))
        page = responses[2].text
        for r in responses:
            assert TOKEN not in r.text and TOKEN not in r.headers.get("location", "")
            for url in re.findall(r'(?:href|action|src|content)="([^"]*)"', r.text):
                assert "token" not in url.lower(), url
        assert 'http-equiv="refresh" content="15; url=/dddframe/"' in page
        assert f'href="/dddframe/dead-letters/{letter_id}"' in page  # replay asks first
        assert "<script" not in page and "style=" not in page and "<style" not in page


async def test_hostile_error_texts_stay_inert(running_app: Application) -> None:
    ids = await _dead(running_app, *HOSTILE)
    assert len(ids) == len(HOSTILE)
    async with _client(running_app) as client:
        await _login(client)
        pages = [(await client.get("/dddframe/", headers=HTML)).text]
        for letter_id in ids:
            pages.append((await client.get(f"/dddframe/dead-letters/{letter_id}")).text)
    for text in pages:
        assert "<script" not in text and "<img" not in text and "<svg onload" not in text
        assert text.count("<svg") <= 1  # the chart only
    assert "boom&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0]
    assert "boom&lt;img src=x onerror=alert(2)&gt;" in pages[0]
    assert "boom&quot;&gt;&lt;svg onload=alert(3)&gt;" in pages[0]


async def test_the_chart_labels_its_time_axis(
    running_app: Application, client: httpx.AsyncClient
) -> None:
    await _dead(running_app, "fine")
    page = (await client.get("/dddframe/", headers=AUTH)).text
    chart = page[page.index('<svg id="throughput"') : page.index("</svg>")]
    assert "time (UTC)" in chart and "events/min" in chart
    ticks = re.findall(r'class="tick">(\d\d:\d\d)<', chart)
    minutes = [int(t[:2]) * 60 + int(t[3:]) for t in ticks]
    steps = [(b - a) % 1440 for a, b in itertools.pairwise(minutes)]
    # left to right in time order, also across midnight (23:51, 23:58, 00:05)
    assert len(ticks) == 3 and all(0 < step < 720 for step in steps)
    assert 'viewBox="0 0 480 160"' in chart


async def test_control_characters_and_huge_texts_are_shown_not_sent_raw(
    running_app: Application,
) -> None:
    title = "boom\x1b]8;;http://evil\x07\x00\x9b<b>" + "x" * 300_000
    (letter_id,) = await _dead(running_app, title)
    async with _client(running_app) as client:
        await _login(client)
        page = await client.get("/dddframe/", headers=HTML)
        confirm = await client.get(f"/dddframe/dead-letters/{letter_id}", headers=HTML)
    for r in (page, confirm):
        assert r.status_code == 200
        assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", r.text)
        assert "boom\\x1b]8;;http://evil\\x07\\x00\\x9b&lt;b&gt;" in r.text
        assert "<b>" not in r.text
    assert len(page.text) < 20_000  # the list shows the first 2000 characters of an error
    assert "more characters" in confirm.text or len(confirm.text) < 100_000


async def test_links_redirects_and_cookie_follow_the_prefixes(running_app: Application) -> None:
    api = FastAPI()
    api.include_router(status_router(running_app, TOKEN, prefix="/ops-page"), prefix="/admin")
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://page") as client:
        r = await client.get("/admin/ops-page/", headers=HTML)
        assert (r.status_code, r.headers["location"]) == (303, "/admin/ops-page/login")
        login = await client.get(r.headers["location"])
        assert 'action="/admin/ops-page/login"' in login.text
        assert 'href="/admin/ops-page/static/status.css"' in login.text
        r = await client.post("/admin/ops-page/login", content=f"token={TOKEN}", headers=FORM)
        assert r.headers["location"] == "/admin/ops-page/"
        assert "path=/admin/ops-page" in r.headers["set-cookie"].lower()
        page = await client.get("/admin/ops-page/", headers=HTML)
        assert page.status_code == 200 and 'action="/admin/ops-page/logout"' in page.text
        assert (await client.get("/dddframe/", headers=AUTH)).status_code == 404
