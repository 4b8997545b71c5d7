from collections import namedtuple
from typing import NamedTuple

Point = namedtuple("Point", ["x", "y"])


class Sample(NamedTuple):
    sensor: str
    value: float
    unit: str = "C"

    def to_f(self):
        return self._replace(value=round(self.value * 9 / 5 + 32, 1), unit="F")


def run_every_minute(meta):
    p = Point(1, 2)
    q = p._replace(y=5)
    samples = [Sample("a", 21.5), Sample("b", 19.0)]
    converted = [s.to_f()._asdict() for s in samples]
    return {
        "p": p._asdict(),
        "q": list(q),
        "fields": list(Sample._fields),
        "made": Point._make([7, 8])._asdict(),
        "converted": converted,
        "defaults": Sample._field_defaults,
    }
