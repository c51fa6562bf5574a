"""Integrations with web frameworks and operator tools (FastAPI, the status page)."""
