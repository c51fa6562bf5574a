"""The operator status page at ``/dddframe/``: subscriptions with their lag (as the transport
reports it: ``await app.bus.status()``), dead letters with their errors and a replay that asks
for confirmation (``app.dead_letters``, the bus's dead letters), and events per minute over the
last minutes as an SVG chart. It has no script and loads nothing from elsewhere (its stylesheet
is served with it): it works without internet, under a strict Content-Security-Policy.

Off by default. Mount it with a token of 16+ characters. Scripts send it as
``Authorization: Bearer <token>``; people log in at ``/dddframe/login`` with a form that sets a
signed session cookie (HttpOnly, SameSite=Strict, Secure over HTTPS), and every POST of a
session carries its CSRF token. The token is never accepted in a URL (servers log URLs).
Every response, errors included, carries :data:`SECURITY_HEADERS`.

>>> from fastapi import FastAPI
>>> from dddframe import Application
>>> app = Application(modules=[], database_url="sqlite+aiosqlite://")
>>> router = status_router(app, token="s3cret-from-your-settings")
>>> sorted(getattr(r, "path", "") for r in router.routes)[:3]
['/dddframe', '/dddframe/', '/dddframe/api/status']
>>> api = FastAPI()
>>> api.include_router(router)

Served: ``GET /dddframe/`` (the page), ``GET|POST /dddframe/login``, ``POST /dddframe/logout``,
``GET /dddframe/dead-letters/{id}`` (a dead letter in full and the replay confirmation),
``POST /dddframe/dead-letters/{id}/replay``, ``GET /dddframe/api/status`` (JSON) and
``GET /dddframe/metrics`` (Prometheus text, with the lag gauges refreshed per scrape).
"""

from __future__ import annotations

from dddframe.integrations.status_page.routes import SECURITY_HEADERS, status_router

__all__ = ["SECURITY_HEADERS", "status_router"]
