# compat: {"config": {"lines": [["widget", "19.99", 3], ["gadget", "5.005", 2]], "vat": "0.21"}}
from decimal import ROUND_HALF_UP, Decimal, getcontext

CENT = Decimal("0.01")


def money(value) -> Decimal:
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


class Invoice:
    def __init__(self, vat):
        self.vat = Decimal(vat)
        self.lines = []

    def add(self, name, price, qty):
        self.lines.append((name, money(price), qty))

    @property
    def net(self):
        return sum((price * qty for _, price, qty in self.lines), Decimal("0"))

    @property
    def gross(self):
        return money(self.net * (1 + self.vat))


def run_every_minute(meta):
    getcontext().prec = 28
    invoice = Invoice(meta.config["vat"])
    for name, price, qty in meta.config["lines"]:
        invoice.add(name, price, qty)
    return {"net": str(invoice.net), "gross": str(invoice.gross), "lines": len(invoice.lines)}
