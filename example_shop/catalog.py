"""Catalog: products and their prices."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from dddframe import Aggregate, Command, Module, Repository
from dddframe.errors import DomainError
from example_shop.events import Price, ProductAdded, ProductName, Sku

__all__ = ["AddProduct", "DuplicateProduct", "InvalidPrice", "Product", "ProductAdded", "catalog"]


class InvalidPrice(DomainError):
    """A price must be positive."""

    http_status = 422


class DuplicateProduct(DomainError):
    """A product with that SKU is in the catalog already."""

    http_status = 409


class Product(Aggregate):
    __tablename__ = "shop_products"
    # The SKU is the id; Aggregate allows overriding the id type, mypy cannot see it.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # type: ignore[assignment]
    name: Mapped[str] = mapped_column(String(120))
    price: Mapped[Decimal] = mapped_column(Numeric(12, 2))

    @classmethod
    def add(cls, sku: str, name: str, price: Decimal) -> Product:
        if price <= 0:
            raise InvalidPrice(f"{sku}: price must be positive, got {price}")
        product = cls(id=sku, name=name, price=price)
        product.domain_event(ProductAdded(sku=sku, name=name, price=price))
        return product


class AddProduct(Command):
    sku: Sku
    name: ProductName
    price: Price


catalog = Module("catalog")


@catalog.handles(AddProduct)
async def add_product(cmd: AddProduct, products: Repository[Product]) -> str:
    if await products.find(cmd.sku) is not None:
        raise DuplicateProduct(f"product {cmd.sku!r} exists already")
    products.add(Product.add(cmd.sku, cmd.name, cmd.price))
    return cmd.sku
