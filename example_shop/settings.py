"""The shop's settings, from environment variables or a settings file (pydantic-settings).

Every field reads ``DDDFRAME_SHOP_<FIELD>``; a ``.env``-style file named by
``DDDFRAME_SHOP_SETTINGS_FILE`` (default ``example_shop.env`` in the working directory, if it
exists) is read too, environment variables winning.

>>> s = ShopSettings(database_url="sqlite+aiosqlite://", bus="database")
>>> s.bus, s.currency
('database', 'EUR')
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ShopSettings"]


class ShopSettings(BaseSettings):
    """Where the shop keeps its data, which bus carries its events, and its payment provider."""

    model_config = SettingsConfigDict(
        env_prefix="DDDFRAME_SHOP_",
        env_file=os.environ.get("DDDFRAME_SHOP_SETTINGS_FILE", "example_shop.env"),
        extra="ignore",
    )

    database_url: str = Field(
        "sqlite+aiosqlite:///example_shop.db",
        description="SQLAlchemy async URL: sqlite+aiosqlite, postgresql+asyncpg, mysql+aiomysql",
    )
    bus: Literal["inprocess", "database", "kafka", "amqp"] = Field(
        "inprocess", description="The transport that delivers the shop's events"
    )
    payment_url: str = Field(
        "http://127.0.0.1:8099",
        description="Base URL of the payment provider (python -m example_shop.payment_stub)",
    )
    payment_timeout: float = Field(5.0, gt=0, description="Seconds per provider request")
    payment_deadline: float = Field(
        900.0, gt=0, description="Seconds an order waits for its payment before it is cancelled"
    )
    payment_retry_base: float = Field(
        0.5, gt=0, description="First retry delay (seconds) when the provider is unreachable"
    )
    payment_retry_limit: int = Field(
        10,
        ge=0,
        description="Retries after the first attempt before a charge goes to the dead letters",
    )
    currency: str = Field("EUR", min_length=3, max_length=3)
    consume: bool = Field(
        True,
        description="The HTTP API delivers events itself; 0 makes it a pure writer next to "
        "`dddframe worker` processes (database, kafka or amqp bus)",
    )
    create_schema: bool = Field(
        True, description="The HTTP API creates missing tables at start-up (SQLite demos)"
    )
    status_token: str | None = Field(
        None,
        min_length=16,
        description="Serve the status page at /dddframe/ behind this token (off when unset)",
    )
