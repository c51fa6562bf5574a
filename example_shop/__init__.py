"""example_shop: a small shop on dddframe, one module per bounded context.

- ``catalog``: products and prices.
- ``ordering``: the Order aggregate with OrderLine entities (place, pay, ship, cancel).
- ``store``: stock per product; reserves stock for placed orders (or rejects them) and releases
  it when an order is cancelled.
- ``payment``: charges an external provider over HTTP (half messages on the database bus),
  refunds charges that arrive after a cancellation.
- ``shipping``: ships paid orders.

Modules react to each other only through the events of ``example_shop.events``, bound by name.
``example_shop.app`` builds the application, ``example_shop.api`` its HTTP API,
``example_shop.demo`` is ``make demo``. See docs/example_shop.md.
"""
