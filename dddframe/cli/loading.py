"""Finding the user's application from ``--app package.module:attribute``."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any

from dddframe.app.application import Application
from dddframe.database import Database
from dddframe.errors import ConfigurationError
from dddframe.outbox.schema import check_schema, create_schema

__all__ = ["load_app", "prepare_schema"]


def load_app(spec: str, **overrides: Any) -> Application:
    """Import ``module:attr``; ``attr`` is an Application or a callable returning one.

    A callable receives ``overrides`` it accepts (e.g. ``consume``, ``groups``), so a factory
    ``def make_app(consume: bool = True, groups=None) -> Application`` can serve API and worker.
    """
    if ":" not in spec:
        raise ConfigurationError(f"--app {spec!r} must look like 'package.module:attribute'")
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"Cannot import {module_name!r} from --app {spec!r}: {exc}"
        ) from exc
    try:
        obj = getattr(module, attr)
    except AttributeError as exc:
        raise ConfigurationError(f"{module_name!r} has no attribute {attr!r}") from exc
    if isinstance(obj, Application):
        app = obj
    elif callable(obj):
        params = inspect.signature(obj).parameters
        app = obj(**{k: v for k, v in overrides.items() if k in params})
        if not isinstance(app, Application):
            raise ConfigurationError(f"{spec} returned {type(app).__name__}, not an Application")
        overrides = {k: v for k, v in overrides.items() if k not in params}
    else:
        raise ConfigurationError(f"{spec} is neither an Application nor a factory of one")
    if "consume" in overrides:
        app.consume = bool(overrides["consume"])
    if overrides.get("groups"):
        app.groups = frozenset(overrides["groups"])
    return app


async def prepare_schema(application: Application, *, create: bool) -> None:
    """Before ``application`` starts: create its schema when ``create`` (``--create-schema``),
    otherwise check that the framework schema is there at this dddframe's version (reads only,
    so a role without CREATE privilege may run workers) and raise
    :class:`~dddframe.errors.SchemaNotReady` saying what to run when it is not."""
    database = Database(application.database_url, **application.engine_options)
    try:
        if create:
            await create_schema(database, *application.metadata)
        else:
            await check_schema(database)
    finally:
        await database.dispose()
