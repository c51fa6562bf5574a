"""FastAPI integration: run an :class:`~dddframe.Application` inside a FastAPI app.

- :func:`lifespan` starts the application with the server and stops it on shutdown;
- :data:`EngineDep` / :data:`ApplicationDep` hand the engine (or the application) to endpoints;
- :func:`install` adds the correlation-id middleware and maps dddframe errors to
  ``application/problem+json`` (RFC 9457): ``NotFound`` 404, ``DomainError`` 422 (or the
  subclass's ``http_status``, e.g. 409 for a state conflict), ``CommandValidationError`` and
  request validation 422, ``ConcurrencyConflict`` and a uniqueness violation 409, a value
  that does not fit its column 422, HTTP errors (unknown path, wrong method) with their
  status, a body over ``max_body_bytes`` 413, and any other error a 500 that carries the
  correlation id (the traceback goes to the ``dddframe.http`` log, never to the client);
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

import logging
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
    from starlette.exceptions import HTTPException
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ModuleNotFoundError as _exc:  # pragma: no cover - exercised in tests/packaging
    raise missing_extra(_exc, "fastapi", "dddframe.integrations.fastapi") from _exc

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from dddframe.app.application import Application
from dddframe.context import current_headers
from dddframe.domain.envelope import CORRELATION_ID
from dddframe.engine.engine import Engine
from dddframe.errors import (
    CommandValidationError,
    ConcurrencyConflict,
    ConfigurationError,
    DatabaseUnavailable,
    DddframeError,
    DomainError,
    NotFound,
)
from dddframe.ids import uuid7
from dddframe.outbox.schema import check_schema

__all__ = [
    "CORRELATION_HEADER",
    "MAX_BODY_BYTES",
    "PROBLEM_JSON",
    "ApplicationDep",
    "BodyLimitMiddleware",
    "CorrelationIdMiddleware",
    "EngineDep",
    "get_application",
    "get_engine",
    "install",
    "lifespan",
    "problem",
]

log = logging.getLogger("dddframe.http")

CORRELATION_HEADER = "X-Correlation-ID"
MAX_BODY_BYTES = 1_048_576
"""The default request body limit of :func:`install` (1 MiB)."""
PROBLEM_JSON = "application/problem+json"
# A caller-supplied id ends up in logs and headers: keep it short and printable.
_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def lifespan(
    application: Application, *, create_schema: bool = False
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """``FastAPI(lifespan=lifespan(app))``: start ``app`` with the server, stop it after.

    ``create_schema=True`` creates missing tables first (demos and SQLite). Otherwise (the
    production setting, where migrations own the schema) the server refuses to start with
    :class:`~dddframe.errors.SchemaNotReady` when the framework schema is missing or at an
    older version than this dddframe needs.
    """

    @asynccontextmanager
    async def run(api: FastAPI) -> AsyncIterator[None]:
        api.state.dddframe = application
        async with application:
            if create_schema:
                await application.create_schema()
            else:
                await check_schema(application.database)
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
    the events its commands record (through ``current_headers``) and is echoed back. An error
    no handler answered becomes a problem+json 500 with the id (logged with its traceback)."""

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
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                headers.append((self._raw, correlation.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        token = current_headers.set({CORRELATION_ID: correlation})
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception(
                "unhandled error in %s %s (correlation id %s)",
                scope.get("method"),
                scope.get("path"),
                correlation,
            )
            if started:
                raise  # the response is on its way: the server can only cut it
            response = problem(
                500,
                "The server could not handle this request. Retry later; if it keeps failing, "
                "report it with the correlation id.",
                error="InternalServerError",
            )
            await response(scope, receive, send_with_id)
        finally:
            current_headers.reset(token)


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than {limit} bytes.")


class BodyLimitMiddleware:
    """ASGI middleware: a request body over ``max_bytes`` is refused with 413, by its
    ``Content-Length`` before it is read, or once the bytes received pass the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            response = _http_problem(_BodyTooLarge(self.max_bytes))
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


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


async def _integrity_error(request: Request, exc: Exception) -> JSONResponse:
    log.info("request conflicts with stored data: %s", exc)
    return problem(
        409,
        "The request conflicts with data stored already (a duplicate of a unique value?).",
        error="Conflict",
    )


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    log.info("request holds a value its column cannot store: %s", exc)
    return problem(
        422,
        "A value in the request is out of range or too long to be stored.",
        error="ValueOutOfRange",
    )


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """503 with Retry-After when the database cannot be reached or dropped the connection (a
    restart, a failover): the next request gets a fresh connection. Other database errors
    stay server errors."""
    lost = isinstance(exc, DatabaseUnavailable) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )
    if not lost:
        raise exc
    log.warning("database unavailable during %s %s: %s", request.method, request.url.path, exc)
    response = problem(
        503,
        "The database is unavailable right now; retry in a moment.",
        error="DatabaseUnavailable",
    )
    response.headers["Retry-After"] = "1"
    return response


def _http_problem(exc: HTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    response = problem(exc.status_code, detail, error="HTTPError")
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return _http_problem(exc)


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
    max_body_bytes: int = MAX_BODY_BYTES,
) -> None:
    """Add the correlation-id and body-limit middleware and the problem+json exception
    handlers to ``api``: no error reaches a client as plain text or a traceback.

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
    if not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise ConfigurationError(
            f"install(): max_body_bytes must be a positive number of bytes, not {max_body_bytes!r}"
        )
    api.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    api.add_middleware(CorrelationIdMiddleware, header=correlation_header)  # outermost
    for exc_type in (NotFound, DomainError, CommandValidationError, ConcurrencyConflict):
        api.add_exception_handler(exc_type, _dddframe_error)
    api.add_exception_handler(RequestValidationError, _request_invalid)
    api.add_exception_handler(IntegrityError, _integrity_error)
    api.add_exception_handler(DataError, _data_error)
    api.add_exception_handler(DatabaseUnavailable, _database_error)
    api.add_exception_handler(DBAPIError, _database_error)
    api.add_exception_handler(HTTPException, _http_error)
