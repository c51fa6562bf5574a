from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dddframe.observability import tracing
from tests.services import database_url

ALL_DATABASES = ["sqlite", "postgresql", "mariadb"]
SERVER_DATABASES = ["postgresql", "mariadb"]


@pytest.fixture(params=ALL_DATABASES)
def any_db(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """A database URL for SQLite, PostgreSQL and MariaDB in turn (tables reset by the app)."""
    return database_url(request.param, tmp_path)


@pytest.fixture(params=SERVER_DATABASES)
def server_db(request: pytest.FixtureRequest, tmp_path: object) -> str:
    return database_url(request.param, tmp_path)


@pytest.fixture
def sqlite_db(tmp_path: object) -> str:
    return database_url("sqlite", tmp_path)


@pytest.fixture
def postgres_db(tmp_path: object) -> str:
    return database_url("postgresql", tmp_path)


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Spans recorded by an SDK provider used by dddframe's tracer only: installing it as the
    global provider would leak into other tests (a global provider cannot be unset)."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("dddframe")
    monkeypatch.setattr(tracing, "_tracer", lambda: tracer)
    monkeypatch.setattr(tracing, "_sdk_installed", True)
    yield exporter
    provider.shutdown()
