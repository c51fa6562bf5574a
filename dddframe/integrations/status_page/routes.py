"""The status page's routes: authentication, CSRF checks, security headers on every response
(errors included) and the replay flow. See :mod:`dddframe.integrations.status_page`."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from dddframe.app.application import Application
from dddframe.bus.dead_letters import DeadLetter
from dddframe.errors import ConfigurationError, DeadLetterNotFound
from dddframe.integrations.fastapi import problem
from dddframe.integrations.status_page import views
from dddframe.integrations.status_page.auth import COOKIE, Session, Sessions, bearer_of
from dddframe.observability import metrics as _metrics
from dddframe.outbox.status import SystemStatus, throughput

__all__ = ["SECURITY_HEADERS", "status_router"]

log = logging.getLogger("dddframe.status_page")

_MIN_TOKEN = 16
_MAX_FORM = 4096
_MAX_ID = 2**63 - 1  # dead letter ids are signed 64-bit integers on every transport
_NUMBER = re.compile(r"-?[0-9]+")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
}
"""Sent with every response of the page, errors and redirects included."""

_CSS = resources.files(__package__).joinpath("static", "status.css").read_bytes()


@dataclass(frozen=True, slots=True)
class _Access:
    """How a request proved itself: a bearer token (a script) or a session (a browser)."""

    session: Session | None
    csrf: str | None


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _base(request: Request) -> str:
    return str(request.scope.get("dddframe_status_base", ""))


# The path of each route after the page's prefix: the page's base path (links, redirects, the
# cookie's path) is the request's path less this, so it is right under any outer prefix.
_SUFFIXES = {
    "dddframe_status_slash": "",
    "dddframe_status_css": "/static/status.css",
    "dddframe_status_login": "/login",
    "dddframe_status_login_post": "/login",
    "dddframe_status_logout": "/logout",
    "dddframe_status_page": "/",
    "dddframe_status_api": "/api/status",
    "dddframe_status_confirm": "/dead-letters/{dead_letter_id}",
    "dddframe_status_replay": "/dead-letters/{dead_letter_id}/replay",
    "dddframe_status_metrics": "/metrics",
    "dddframe_status_unknown": "/{rest}",
}


def _base_of(request: Request, name: str) -> str:
    path = str(request.scope.get("path", ""))
    try:
        suffix = _SUFFIXES[name].format(**request.path_params)
    except (KeyError, IndexError):
        return ""
    return path[: len(path) - len(suffix)] if suffix and path.endswith(suffix) else path


def _error(request: Request, code: int, detail: str, headers: Mapping[str, str] | None) -> Response:
    base = _base(request)
    if code == 401 and _wants_html(request) and request.method == "GET" and base:
        return RedirectResponse(f"{base}/login", status.HTTP_303_SEE_OTHER)
    title = HTTPStatus(code).phrase
    response: Response
    if _wants_html(request):
        response = HTMLResponse(views.error_page(base, code, title, detail), status_code=code)
    else:
        response = problem(code, detail, error="StatusPageError")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


class _PageRoute(APIRoute):
    """Every response of the page carries :data:`SECURITY_HEADERS`; errors are answered here
    (problem+json for scripts, a page for browsers) so that they carry them too."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        route_name = self.name

        async def guarded(request: Request) -> Response:
            request.scope["dddframe_status_base"] = _base_of(request, route_name).rstrip("/")
            try:
                response = await handler(request)
            except HTTPException as exc:
                detail = (
                    exc.detail
                    if isinstance(exc.detail, str)
                    else HTTPStatus(exc.status_code).phrase
                )
                response = _error(request, exc.status_code, detail, exc.headers)
            except RequestValidationError:
                response = _error(request, 422, "The request does not validate.", None)
            except Exception:
                log.exception("status page: %s %s failed", request.method, request.url.path)
                response = _error(
                    request, 500, "The status page failed; the server log has the details.", None
                )
            for header, value in SECURITY_HEADERS.items():
                response.headers[header] = value
            return response

        return guarded


def _dead_letter_id(raw: str) -> int:
    if not _NUMBER.fullmatch(raw):
        raise HTTPException(
            422, f"A dead letter id is a whole number (as the list shows it), not {raw[:40]!r}."
        )
    number = int(raw) if len(raw) <= 20 else -1
    if not 0 <= number <= _MAX_ID:
        raise HTTPException(404, f"No dead letter has the id {raw[:40]}.")
    return number


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form body (no multipart: the page's forms have one or two fields)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM:
            raise HTTPException(413, f"A status page form is at most {_MAX_FORM} bytes.")
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=8, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(400, "The form is not valid urlencoded UTF-8.") from exc
    return {name: values[0] for name, values in fields.items()}


def status_router(
    app: Application,
    token: str,
    *,
    prefix: str = "/dddframe",
    minutes: int = 15,
    session_seconds: int = 8 * 3600,
    secure_cookie: bool | None = None,
) -> APIRouter:
    """The status page's routes under ``prefix``, protected by ``token``.

    ``token`` must be a secret of at least 16 characters (the page can replay dead letters):
    scripts send it as ``Authorization: Bearer <token>``, people log in with it at
    ``<prefix>/login`` and get a session cookie for ``session_seconds``. The cookie is
    ``Secure`` when the request came over HTTPS (behind a proxy, run uvicorn with
    ``--proxy-headers``) unless ``secure_cookie`` says otherwise. ``minutes`` is the span of the
    throughput chart.
    """
    if not isinstance(token, str) or len(token) < _MIN_TOKEN:
        raise ConfigurationError(
            f"The dddframe status page needs a token of at least {_MIN_TOKEN} characters; "
            "configure one (e.g. from an environment variable) or leave the page off."
        )
    if not isinstance(prefix, str) or not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", prefix):
        raise ConfigurationError(
            f"status_router(prefix={prefix!r}): give a path such as '/dddframe' "
            "(starting with '/', no trailing '/', letters, digits, '.', '_', '~', '-')."
        )
    for name, value, low in (("minutes", minutes, 1), ("session_seconds", session_seconds, 60)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigurationError(
                f"status_router({name}={value!r}): give a whole number >= {low}."
            )
    sessions = Sessions(token, lifetime=session_seconds)

    router = APIRouter(prefix=prefix, route_class=_PageRoute, include_in_schema=False)

    async def access(request: Request) -> _Access:
        if "token" in request.query_params:
            raise HTTPException(
                400,
                "The token does not go in a URL (servers and proxies log URLs): send it as "
                f"'Authorization: Bearer <token>' or log in at {_base(request)}/login. "
                "If a real token was sent this way, change it.",
            )
        header = request.headers.get("authorization")
        if header is not None:
            given = bearer_of(header)
            if given is not None and sessions.token_matches(given):
                return _Access(session=None, csrf=None)
        else:
            session = sessions.verify(request.cookies.get(COOKIE, ""))
            if session is not None:
                return _Access(session=session, csrf=sessions.csrf(session))
        raise HTTPException(
            401,
            "dddframe status page: send the configured token as 'Authorization: Bearer "
            f"<token>', or log in at {_base(request)}/login.",
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def checked_post(request: Request) -> tuple[_Access, dict[str, str]]:
        """A state-changing POST: a session must carry its CSRF token."""
        who = await access(request)
        form = await _form(request)
        if who.session is not None:
            if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
                raise HTTPException(403, "Cross-site requests cannot change anything here.")
            given = form.get("csrf") or request.headers.get("x-csrf-token", "")
            if not sessions.csrf_matches(who.session, given):
                raise HTTPException(
                    403, "The form is out of date (CSRF token missing or wrong): reload the page."
                )
        return who, form

    def cookie_secure(request: Request) -> bool:
        return request.url.scheme == "https" if secure_cookie is None else secure_cookie

    async def snapshot(
        limit: int = 100,
    ) -> tuple[SystemStatus, list[tuple[Any, int]], list[DeadLetter]]:
        current = await app.bus.status()
        async with app.database.connect() as conn:
            rates = await throughput(conn, minutes=minutes)
        dead = await app.dead_letters.list(limit=limit)
        return current, rates, dead

    @router.get("", name="dddframe_status_slash")
    async def slash(request: Request) -> Response:
        return RedirectResponse(f"{_base(request)}/", status.HTTP_308_PERMANENT_REDIRECT)

    @router.get("/static/status.css", name="dddframe_status_css")
    async def css() -> Response:
        return Response(_CSS, media_type="text/css; charset=utf-8")

    @router.get("/login", name="dddframe_status_login", response_class=HTMLResponse)
    async def login_form(request: Request) -> HTMLResponse:
        return HTMLResponse(views.login_page(_base(request)))

    @router.post("/login", name="dddframe_status_login_post")
    async def login(request: Request) -> Response:
        form = await _form(request)
        if not sessions.token_matches(form.get("token", "")):
            page = views.login_page(_base(request), message="That token is not right.")
            return HTMLResponse(page, status_code=401)
        response = RedirectResponse(f"{_base(request)}/", status.HTTP_303_SEE_OTHER)
        response.set_cookie(
            COOKIE,
            sessions.issue(),
            max_age=session_seconds,
            path=_base(request),
            secure=cookie_secure(request),
            httponly=True,
            samesite="strict",
        )
        return response

    @router.post("/logout", name="dddframe_status_logout")
    async def logout(request: Request) -> Response:
        who, _ = await checked_post(request)
        if who.session is not None:
            sessions.revoke(who.session)
        response = RedirectResponse(f"{_base(request)}/login", status.HTTP_303_SEE_OTHER)
        response.delete_cookie(
            COOKIE,
            path=_base(request),
            secure=cookie_secure(request),
            httponly=True,
            samesite="strict",
        )
        return response

    @router.get("/", name="dddframe_status_page", response_class=HTMLResponse)
    async def page(request: Request, who: _Access = Depends(access)) -> HTMLResponse:
        current, rates, dead = await snapshot()
        replayed = request.query_params.get("replayed", "")
        notice = (
            f"Dead letter {int(replayed)} replayed: it is delivered again shortly."
            if replayed.isdigit() and len(replayed) <= 20
            else ""
        )
        html = views.status_page(_base(request), current, rates, dead, csrf=who.csrf, notice=notice)
        return HTMLResponse(html)

    @router.get("/api/status", name="dddframe_status_api")
    async def api_status(_: _Access = Depends(access)) -> JSONResponse:
        current, rates, dead = await snapshot()
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

    async def dead_letter(raw: str) -> DeadLetter:
        number = _dead_letter_id(raw)
        try:
            return await app.dead_letters.get(number)
        except DeadLetterNotFound as exc:
            raise HTTPException(404, str(exc)) from exc

    @router.get("/dead-letters/{dead_letter_id}", name="dddframe_status_confirm")
    async def confirm(
        dead_letter_id: str, request: Request, who: _Access = Depends(access)
    ) -> HTMLResponse:
        letter = await dead_letter(dead_letter_id)
        return HTMLResponse(views.confirm_page(_base(request), letter, csrf=who.csrf))

    @router.post("/dead-letters/{dead_letter_id}/replay", name="dddframe_status_replay")
    async def replay(dead_letter_id: str, request: Request) -> Response:
        who, _ = await checked_post(request)
        letter = await dead_letter(dead_letter_id)
        if letter.state != "dead":
            raise HTTPException(
                409, f"Parked event {letter.id} is not a dead letter (it is {letter.state!r})."
            )
        replayed = await app.dead_letters.replay([letter.id])
        if who.session is not None:
            target = f"{_base(request)}/?replayed={letter.id}"
            return RedirectResponse(target, status.HTTP_303_SEE_OTHER)
        return JSONResponse({"replayed": replayed})

    @router.get("/metrics", name="dddframe_status_metrics")
    async def prometheus_metrics(_: _Access = Depends(access)) -> Response:
        found = _metrics.metrics()
        if found is None:
            raise HTTPException(404, "install prometheus-client: dddframe[prometheus]")
        import prometheus_client

        _metrics.update_lag(await app.bus.status())
        return Response(
            prometheus_client.generate_latest(found.registry),
            media_type=prometheus_client.CONTENT_TYPE_LATEST,
        )

    @router.api_route(
        "/{rest:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
        name="dddframe_status_unknown",
    )
    async def unknown(rest: str) -> Response:
        raise HTTPException(404, "The status page has no such page.")

    return router
