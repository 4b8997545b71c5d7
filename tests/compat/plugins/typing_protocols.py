from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Protocol, TypedDict, Union


class Record(TypedDict):
    id: int
    name: str


class Sink(Protocol):
    def write(self, record: Record) -> None: ...


class ListSink:
    def __init__(self) -> None:
        self.items: List[Record] = []

    def write(self, record: Record) -> None:
        self.items.append(record)


Handler = Callable[[Record], Optional[str]]


def shout(record: Record) -> Optional[str]:
    return record["name"].upper() if record["id"] % 2 else None


def pipeline(records: List[Dict[str, Any]], sink: Sink, handler: Handler) -> List[Union[str, None]]:
    out = []
    for raw in records:
        record: Record = {"id": int(raw["id"]), "name": str(raw["name"])}
        sink.write(record)
        out.append(handler(record))
    return out


def run_every_minute(meta):
    sink = ListSink()
    result = pipeline([{"id": 1, "name": "ann"}, {"id": 2, "name": "bo"}], sink, shout)
    return {"result": result, "stored": sink.items, "annotation": ListSink.write.__annotations__["record"]}
