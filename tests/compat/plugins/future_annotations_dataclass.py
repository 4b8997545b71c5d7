from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar


@dataclass
class LineItem:
    sku: str
    qty: int = 1

    def total(self, prices: dict[str, float]) -> float:
        return prices[self.sku] * self.qty


@dataclass
class Cart:
    items: list[LineItem] = field(default_factory=list)
    currency: str = "EUR"
    MAX_ITEMS: ClassVar[int] = 50

    def add(self, sku: str, qty: int = 1) -> Cart:
        if len(self.items) >= self.MAX_ITEMS:
            raise ValueError("cart full")
        self.items.append(LineItem(sku, qty))
        return self


def run_every_minute(meta):
    cart = Cart().add("apple", 3).add("pear")
    prices = {"apple": 0.5, "pear": 1.25}
    return {
        "cart": asdict(cart),
        "total": sum(i.total(prices) for i in cart.items),
        "annotation": Cart.__annotations__["items"],
    }
