from dataclasses import asdict, astuple, dataclass, field, is_dataclass
from datetime import date


@dataclass
class Address:
    city: str
    zip: str = ""


@dataclass
class Customer:
    name: str
    address: Address
    tags: list = field(default_factory=list)
    since: date = field(default=date(2020, 1, 1), repr=False)

    @property
    def label(self):
        return f"{self.name} ({self.address.city})"


def run_every_minute(meta):
    c = Customer("Ann", Address("Oslo", "0150"), ["vip"])
    data = asdict(c)
    data["since"] = data["since"].isoformat()
    return {"dict": data, "tuple_len": len(astuple(c)), "repr": repr(c), "label": c.label,
            "is_dc": [is_dataclass(c), is_dataclass(Customer), is_dataclass(1)]}
