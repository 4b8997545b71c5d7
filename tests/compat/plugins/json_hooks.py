import json
from dataclasses import asdict, dataclass, is_dataclass
from datetime import date, datetime
from decimal import Decimal


@dataclass
class Payment:
    amount: Decimal
    on: date


class Encoder(json.JSONEncoder):
    def default(self, o):
        if isinstance(o, Decimal):
            return str(o)
        if isinstance(o, (date, datetime)):
            return o.isoformat()
        if is_dataclass(o):
            return asdict(o)
        return super().default(o)


def as_payment(d):
    if "amount" in d and "on" in d:
        return Payment(Decimal(d["amount"]), date.fromisoformat(d["on"]))
    return d


def run_every_minute(meta):
    payments = [Payment(Decimal("12.30"), date(2024, 2, 29))]
    text = json.dumps({"payments": payments}, cls=Encoder, sort_keys=True)
    back = json.loads(text, object_hook=as_payment)
    floats = json.loads("[1.10, 2]", parse_float=Decimal)
    try:
        json.dumps({"x": object()})
    except TypeError as exc:
        problem = "not JSON serializable" in str(exc)
    return {"text": text, "back": str(back["payments"][0].amount), "floats": [str(f) for f in floats], "problem": problem}
