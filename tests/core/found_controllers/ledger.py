from __future__ import annotations

from typing import Any

SEEN: list[dict[str, Any]] = []


class LedgerController:
    async def on_deposited(self, event: dict[str, Any]) -> None:
        SEEN.append(event)
