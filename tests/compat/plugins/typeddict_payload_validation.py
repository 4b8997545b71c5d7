# compat: {"config": {"payloads": [{"id": 1, "email": "a@b.c", "tags": ["x"]}, {"id": "2", "email": "nope"}, {"email": "c@d.e"}]}}
from typing import Any, NotRequired, TypedDict, get_args, get_origin


class Payload(TypedDict):
    id: int
    email: str
    tags: NotRequired[list[str]]


def validate(raw: dict[str, Any]) -> list[str]:
    problems = []
    for key in Payload.__required_keys__:
        if key not in raw:
            problems.append(f"{key} missing")
    if "id" in raw and not isinstance(raw["id"], int):
        problems.append("id must be an integer")
    if "email" in raw and "@" not in raw["email"]:
        problems.append("email invalid")
    return problems


def run_every_minute(meta):
    results = [validate(p) for p in meta.config["payloads"]]
    hint = list[str]
    return {"results": results, "origin": get_origin(hint).__name__, "args": [a.__name__ for a in get_args(hint)],
            "optional": sorted(Payload.__optional_keys__)}
