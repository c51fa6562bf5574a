"""The shop application.

``dddframe worker --app example_shop.app:app`` (or ``:make_app``) runs its listeners; the HTTP
API (example_shop.api) builds the same application with its own settings.

>>> application = make_app(settings=ShopSettings(database_url="sqlite+aiosqlite://"))
>>> [m.name for m in application.modules]
['catalog', 'ordering', 'store', 'payment', 'shipping', 'fulfilment', 'reporting']
"""

from __future__ import annotations

from dddframe import Application
from example_shop.catalog import catalog
from example_shop.fulfilment import make_fulfilment_module
from example_shop.order_summary import reporting
from example_shop.ordering import ordering
from example_shop.payment import make_payment_module
from example_shop.settings import ShopSettings
from example_shop.shipping import shipping
from example_shop.store import store

__all__ = ["ShopSettings", "app", "make_app"]


def make_app(
    consume: bool = True,
    groups: list[str] | None = None,
    *,
    settings: ShopSettings | None = None,
) -> Application:
    """The shop with ``settings`` (default: read from ``DDDFRAME_SHOP_*`` env vars).

    ``consume=False`` builds an application that only runs commands (an API process next to
    workers); ``groups`` limits the listeners this process runs to those modules.
    """
    settings = settings or ShopSettings()
    return Application(
        modules=[
            catalog,
            ordering,
            store,
            make_payment_module(settings),
            shipping,
            make_fulfilment_module(),
            reporting,
        ],
        database_url=settings.database_url,
        bus=settings.bus,
        consume=consume,
        groups=groups,
    )


app = make_app()
