"""The operator status page at ``/dddframe/``: subscriptions with their lag (as the transport
reports it: ``await app.bus.status()``), dead letters with their errors and a replay button
(``app.dead_letters``), and events per minute over the last minutes as a small
inline SVG chart (no scripts or styles from a CDN: it works without internet).

Off by default. Mount it with a token; every request must carry it as ``Authorization: Bearer
<token>`` or ``?token=<token>`` (compared in constant time):

>>> from fastapi import FastAPI
>>> from dddframe import Application
>>> app = Application(modules=[], database_url="sqlite+aiosqlite://")
>>> router = status_router(app, token="s3cret-from-your-settings")
>>> sorted(getattr(r, "path", "") for r in router.routes)[:2]
['/dddframe/', '/dddframe/api/status']
>>> api = FastAPI()
>>> api.include_router(router)

Also served: ``GET /dddframe/api/status`` (JSON), ``POST /dddframe/dead-letters/{id}/replay``
and ``GET /dddframe/metrics`` (Prometheus text, with the lag gauges refreshed per scrape).
"""

from __future__ import annotations

import hmac
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from dddframe.app.application import Application
from dddframe.bus.dead_letters import DeadLetter
from dddframe.errors import ConfigurationError, DeadLetterNotFound
from dddframe.observability import metrics as _metrics
from dddframe.outbox.status import SystemStatus, throughput

__all__ = ["status_router"]

_MIN_TOKEN = 16


def _check_token(expected: str) -> Any:
    secret = expected.encode()

    async def check(request: Request) -> str:
        given = request.query_params.get("token", "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), secret):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "dddframe status page: send the configured token as "
                "'Authorization: Bearer <token>' or '?token=<token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return given

    return check


async def _snapshot(
    app: Application, minutes: int
) -> tuple[SystemStatus, list[Any], list[DeadLetter]]:
    current = await app.bus.status()
    async with app.database.connect() as conn:
        rates = await throughput(conn, minutes=minutes)
    dead = await app.dead_letters.list(limit=100)
    return current, rates, dead


def _chart(rates: list[tuple[datetime, int]]) -> str:
    width, height, pad = 480, 120, 18
    top = max((n for _, n in rates), default=0) or 1
    bar = (width - 2 * pad) / max(len(rates), 1)
    parts = [
        f'<svg id="throughput" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" role="img" aria-label="events per minute">',
        f'<text x="{pad}" y="12" font-size="10">{top} events/min</text>',
    ]
    for i, (at, n) in enumerate(rates):
        h = (height - 2 * pad) * n / top
        x = pad + i * bar
        parts.append(
            f'<rect x="{x:.1f}" y="{height - pad - h:.1f}" width="{bar * 0.8:.1f}" '
            f'height="{h:.1f}" fill="#3b82f6"><title>{at:%H:%M} {n}</title></rect>'
        )
    parts.append(
        f'<text x="{pad}" y="{height - 4}" font-size="10">{rates[0][0]:%H:%M}</text>'
        if rates
        else ""
    )
    parts.append("</svg>")
    return "".join(parts)


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#111}"
    "table{border-collapse:collapse;margin-bottom:1.5em}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}.bad{color:#b91c1c;font-weight:bold}"
    "pre{white-space:pre-wrap;max-width:60em;margin:0}"
)


def _page(current: SystemStatus, rates: list[Any], dead: list[DeadLetter], token: str) -> str:
    q = quote(token, safe="")
    rows = "".join(
        f"<tr><td>{escape(s.name)}</td><td>{'-' if s.position is None else s.position}</td>"
        f"<td>{s.lag_events}</td><td>{s.lag_seconds:.1f}</td><td>{s.retries_pending}</td>"
        f'<td class="{"bad" if s.dead_letters else ""}">{s.dead_letters}</td></tr>'
        for s in current.subscriptions
    )
    relays = "".join(
        f"<tr><td>{escape(r.name)}</td><td>{r.last_sent}</td><td>{r.lag_events}</td></tr>"
        for r in current.relays
    )
    letters = "".join(
        f'<tr class="dead-letter" id="dead-letter-{d.id}"><td>{d.id}</td>'
        f"<td>{escape(d.subscription)}</td><td>{escape(d.name)}</td>"
        f"<td>{escape(d.ordering_key)}</td><td>{d.attempts}</td>"
        f'<td><pre class="error">{escape(d.error or "")}</pre></td>'
        f'<td><form method="post" action="dead-letters/{d.id}/replay?token={q}">'
        f'<button type="submit" id="replay-{d.id}">replay</button></form></td></tr>'
        for d in dead
    )
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        '<meta http-equiv="refresh" content="15"><title>dddframe status</title>'
        f"<style>{_STYLE}</style></head><body><h1>dddframe status</h1>"
        f"<p>outbox head {current.head}, not yet sequenced {current.unsequenced}, "
        f"at {current.at:%Y-%m-%d %H:%M:%S} UTC</p>"
        '<h2>Subscriptions</h2><table id="subscriptions"><tr><th>subscription</th>'
        "<th>position</th><th>lag</th><th>lag (s)</th><th>retries</th><th>dead letters</th>"
        f"</tr>{rows}</table>"
        + (
            '<h2>Relays</h2><table id="relays"><tr><th>relay</th><th>last sent</th>'
            f"<th>lag</th></tr>{relays}</table>"
            if relays
            else ""
        )
        + f"<h2>Events per minute</h2>{_chart(rates)}"
        f"<h2>Dead letters ({len(dead)})</h2>"
        + (
            '<table id="dead-letters"><tr><th>id</th><th>subscription</th><th>event</th>'
            f"<th>aggregate</th><th>attempts</th><th>error</th><th></th></tr>{letters}</table>"
            if dead
            else '<p id="no-dead-letters">none</p>'
        )
        + "</body></html>"
    )


def status_router(
    app: Application, token: str, *, prefix: str = "/dddframe", minutes: int = 15
) -> APIRouter:
    """The status page's routes under ``prefix``, protected by ``token``.

    ``token`` must be a secret of at least 16 characters (the page can replay dead letters);
    ``minutes`` is the span of the throughput chart.
    """
    if not isinstance(token, str) or len(token) < _MIN_TOKEN:
        raise ConfigurationError(
            f"The dddframe status page needs a token of at least {_MIN_TOKEN} characters; "
            "configure one (e.g. from an environment variable) or leave the page off."
        )
    router = APIRouter(prefix=prefix, dependencies=[Depends(_check_token(token))])

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request) -> HTMLResponse:
        current, rates, dead = await _snapshot(app, minutes)
        return HTMLResponse(_page(current, rates, dead, request.query_params.get("token", "")))

    @router.get("/api/status", include_in_schema=False)
    async def api_status() -> JSONResponse:
        current, rates, dead = await _snapshot(app, minutes)
        data = current.to_dict()
        data["throughput"] = [{"minute": at.isoformat(), "events": n} for at, n in rates]
        data["dead_letter_list"] = [
            {
                "id": d.id,
                "subscription": d.subscription,
                "event_id": d.event_id,
                "name": d.name,
                "ordering_key": d.ordering_key,
                "attempts": d.attempts,
                "error": d.error,
            }
            for d in dead
        ]
        return JSONResponse(data)

    @router.post("/dead-letters/{dead_letter_id}/replay", include_in_schema=False)
    async def replay(dead_letter_id: int, request: Request) -> Response:
        try:
            await app.dead_letters.get(dead_letter_id)
        except DeadLetterNotFound as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
        replayed = await app.dead_letters.replay([dead_letter_id])
        if "text/html" in request.headers.get("accept", ""):
            q = quote(request.query_params.get("token", ""), safe="")
            return RedirectResponse(f"{prefix}/?token={q}", status.HTTP_303_SEE_OTHER)
        return JSONResponse({"replayed": replayed})

    @router.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        found = _metrics.metrics()
        if found is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, "install prometheus-client: dddframe[prometheus]"
            )
        import prometheus_client

        _metrics.update_lag(await app.bus.status())
        return Response(
            prometheus_client.generate_latest(found.registry),
            media_type=prometheus_client.CONTENT_TYPE_LATEST,
        )

    return router
