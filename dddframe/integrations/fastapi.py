"""FastAPI integration: run an :class:`~dddframe.Application` inside a FastAPI app.

- :func:`lifespan` starts the application with the server and stops it on shutdown;
- :data:`EngineDep` / :data:`ApplicationDep` hand the engine (or the application) to endpoints;
- :func:`install` adds the correlation-id middleware and maps dddframe errors to
  ``application/problem+json`` (RFC 9457): ``NotFound`` 404, ``DomainError`` 422 (or the
  subclass's ``http_status``, e.g. 409 for a state conflict), ``CommandValidationError`` and
  request validation 422, ``ConcurrencyConflict`` 409;
- ``install(api, status_page=application, status_token=...)`` also serves the operator status
  page at ``/dddframe/`` (off by default);
- the ``X-Correlation-ID`` request header (a new id when absent) becomes the ``correlation_id``
  of every event the request's commands record, and of the events that follow from them, and is
  echoed in the response.

>>> from fastapi import FastAPI
>>> from dddframe import Application, Command, Module
>>> class Ping(Command):
...     n: int
>>> pings = Module("pings")
>>> @pings.handles(Ping)
... async def ping(cmd: Ping) -> int:
...     return cmd.n + 1
>>> application = Application(modules=[pings], database_url="sqlite+aiosqlite://")
>>> api = FastAPI(lifespan=lifespan(application, create_schema=True))
>>> install(api)
>>> @api.post("/ping")
... async def ping_endpoint(cmd: Ping, engine: EngineDep) -> int:
...     return int(await engine.run(cmd))
>>> import asyncio, httpx
>>> async def call() -> httpx.Response:
...     async with api.router.lifespan_context(api):  # what the server does at start-up
...         transport = httpx.ASGITransport(app=api)
...         async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
...             return await client.post("/ping", json={"n": 41},
...                                      headers={"X-Correlation-ID": "req-1"})
>>> response = asyncio.run(call())
>>> response.json(), response.headers["X-Correlation-ID"]
(42, 'req-1')
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from http import HTTPStatus
from typing import Annotated, Any

from dddframe.errors import missing_extra

try:
    from fastapi import Depends, FastAPI, Request
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ModuleNotFoundError as _exc:  # pragma: no cover - exercised in tests/packaging
    raise missing_extra(_exc, "fastapi", "dddframe.integrations.fastapi") from _exc

from dddframe.app.application import Application
from dddframe.context import current_headers
from dddframe.domain.envelope import CORRELATION_ID
from dddframe.engine.engine import Engine
from dddframe.errors import (
    CommandValidationError,
    ConcurrencyConflict,
    ConfigurationError,
    DddframeError,
    DomainError,
    NotFound,
)
from dddframe.ids import uuid7

__all__ = [
    "CORRELATION_HEADER",
    "PROBLEM_JSON",
    "ApplicationDep",
    "CorrelationIdMiddleware",
    "EngineDep",
    "get_application",
    "get_engine",
    "install",
    "lifespan",
    "problem",
]

CORRELATION_HEADER = "X-Correlation-ID"
PROBLEM_JSON = "application/problem+json"
# A caller-supplied id ends up in logs and headers: keep it short and printable.
_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def lifespan(
    application: Application, *, create_schema: bool = False
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """``FastAPI(lifespan=lifespan(app))``: start ``app`` with the server, stop it after.

    ``create_schema=True`` creates missing tables first (demos and SQLite; use migrations or
    ``dddframe schema`` in production).
    """

    @asynccontextmanager
    async def run(api: FastAPI) -> AsyncIterator[None]:
        api.state.dddframe = application
        async with application:
            if create_schema:
                await application.create_schema()
            yield

    return run


def get_application(request: Request) -> Application:
    """Dependency: the application started by :func:`lifespan`."""
    application = getattr(request.app.state, "dddframe", None)
    if not isinstance(application, Application):
        raise ConfigurationError(
            "No dddframe Application on this FastAPI app: create it with "
            "FastAPI(lifespan=dddframe.integrations.fastapi.lifespan(application))."
        )
    return application


def get_engine(application: Annotated[Application, Depends(get_application)]) -> Engine:
    """Dependency: the application's command engine."""
    return application.engine


ApplicationDep = Annotated[Application, Depends(get_application)]
EngineDep = Annotated[Engine, Depends(get_engine)]


class CorrelationIdMiddleware:
    """ASGI middleware: the request's correlation id becomes the ``correlation_id`` header of
    the events its commands record (through ``current_headers``) and is echoed back."""

    def __init__(self, app: ASGIApp, header: str = CORRELATION_HEADER) -> None:
        self.app = app
        self.header = header
        self._raw = header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == self._raw), b"").decode("latin-1")
        correlation = given if _VALID_ID.match(given) else str(uuid7())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((self._raw, correlation.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        token = current_headers.set({CORRELATION_ID: correlation})
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_headers.reset(token)


def problem(status: int, detail: str, *, error: str, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem response; ``error`` names the exception class."""
    body: dict[str, Any] = {
        "type": f"urn:dddframe:error:{error}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "error": error,
    }
    correlation = (current_headers.get() or {}).get(CORRELATION_ID)
    if correlation:
        body["correlation_id"] = correlation
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def _status_of(exc: DddframeError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, ConcurrencyConflict):
        return 409
    if isinstance(exc, DomainError):
        status = getattr(exc, "http_status", 422)
        return status if isinstance(status, int) and 400 <= status < 500 else 422
    return 422  # CommandValidationError


async def _dddframe_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DddframeError)
    return problem(_status_of(exc), str(exc), error=type(exc).__name__)


async def _request_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return problem(
        422,
        "The request does not validate; see 'errors'.",
        error="RequestValidationError",
        errors=jsonable_encoder(exc.errors()),
    )


def install(
    api: FastAPI,
    *,
    correlation_header: str = CORRELATION_HEADER,
    status_page: Application | None = None,
    status_token: str | None = None,
) -> None:
    """Add the correlation-id middleware and the problem+json exception handlers to ``api``.

    The operator status page (``/dddframe/``, see :mod:`dddframe.integrations.status_page`) is
    off by default; pass the application as ``status_page`` and a secret ``status_token`` to
    serve it. A token without an application, or the reverse, is a configuration error rather
    than a page silently left off (or left open).
    """
    if (status_page is None) != (status_token is None):
        raise ConfigurationError(
            "install(): the status page needs both status_page=<your Application> and "
            "status_token=<a secret of 16+ characters>; pass both, or neither to keep it off."
        )
    if status_page is not None and status_token is not None:
        from dddframe.integrations.status_page import status_router

        api.include_router(status_router(status_page, status_token))
    api.add_middleware(CorrelationIdMiddleware, header=correlation_header)
    for exc_type in (NotFound, DomainError, CommandValidationError, ConcurrencyConflict):
        api.add_exception_handler(exc_type, _dddframe_error)
    api.add_exception_handler(RequestValidationError, _request_invalid)
