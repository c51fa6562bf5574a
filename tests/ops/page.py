"""Read the status page of a started application over ASGI: its JSON status and the
Prometheus gauges of one subscription (used by the per-transport operator tests)."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import REGISTRY

from dddframe import Application
from dddframe.integrations.status_page import status_router

TOKEN = "test-token-0123456789"


async def page_view(app: Application, subscription: str) -> tuple[dict[str, Any], dict[str, float]]:
    """(``/dddframe/api/status`` JSON, the lag and dead-letter gauges after a metrics scrape)."""
    api = FastAPI()
    api.include_router(status_router(app, TOKEN))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://page") as client:
        status = (await client.get("/dddframe/api/status", headers=auth)).json()
        scrape = await client.get("/dddframe/metrics", headers=auth)
        assert scrape.status_code == 200, scrape.text
    gauges = {
        name: REGISTRY.get_sample_value(
            f"dddframe_subscription_{name}", {"subscription": subscription}
        )
        or 0.0
        for name in ("lag_events", "lag_seconds", "dead_letters")
    }
    return status, gauges
