"""The projections tests use the core tests' application factory."""

from tests.core.conftest import AppFactory, make_app

__all__ = ["AppFactory", "make_app"]
