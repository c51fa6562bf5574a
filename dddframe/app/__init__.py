"""Modules, listener binding by name and the application."""

from dddframe.app.application import Application
from dddframe.app.module import Module

__all__ = ["Application", "Module"]
