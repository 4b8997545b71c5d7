# compat: {"storage": {"stock": {"apple": 5, "pear": 0}}}
class Item:
    kind = "item"

    def __init__(self, name, qty):
        self.name = name
        self.qty = qty

    def describe(self):
        return f"{self.kind}:{self.name}x{self.qty}"

    def __lt__(self, other):
        return self.qty < other.qty


class Perishable(Item):
    kind = "perishable"

    def __init__(self, name, qty, days):
        super().__init__(name, qty)
        self.days = days

    def describe(self):
        base = super().describe()
        return f"{base} ({self.days}d)"


def run_every_minute(meta):
    stock = meta.storage.get("stock", {})
    items = [Perishable(n, q, 3) if n == "apple" else Item(n, q) for n, q in stock.items()]
    for item in items:
        item.qty += 10
    stock = {i.name: i.qty for i in items}
    meta.storage.set("stock", stock)
    meta.storage.delete("legacy")
    return {"items": [i.describe() for i in sorted(items)], "mro": [c.__name__ for c in type(items[0]).mro()]}
