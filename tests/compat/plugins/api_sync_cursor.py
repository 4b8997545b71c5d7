# compat: {"config": {"base_url": "https://api.example.com", "page_size": 2}, "storage": {"cursor": "c1"}, "allowed_hosts": ["api.example.com"], "fetch": {"https://api.example.com/orders?cursor=c1&limit=2": {"json": {"items": [{"id": 1, "total": "9.50"}, {"id": 2, "total": "3.25"}], "next": "c2"}}}}
"""Sync orders page by page; the cursor advances only after the page is processed."""
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import urlencode


@dataclass
class Order:
    id: int
    total: Decimal

    @classmethod
    def from_api(cls, raw: dict) -> "Order":
        return cls(id=int(raw["id"]), total=Decimal(raw["total"]))


def fetch_page(meta, cursor):
    query = urlencode({"cursor": cursor, "limit": meta.config["page_size"]})
    response = meta.fetch(f"{meta.config['base_url']}/orders?{query}")
    if not response.ok:
        raise RuntimeError(f"API answered {response.status}")
    return response.json()


def run_every_minute(meta):
    cursor = meta.storage.get("cursor")
    page = fetch_page(meta, cursor)
    orders = [Order.from_api(item) for item in page["items"]]
    seen = meta.storage.get("seen", 0)
    meta.storage.set("seen", seen + len(orders))
    meta.storage.set("cursor", page["next"])
    meta.logger.info(f"synced {len(orders)} orders, next cursor {page['next']}")
    return {"orders": [o.id for o in orders], "sum": str(sum(o.total for o in orders))}
