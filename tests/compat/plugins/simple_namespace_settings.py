# compat: {"config": {"region": "eu", "limit": 5}}
from types import SimpleNamespace


def load(config):
    defaults = {"region": "us", "limit": 10, "verbose": False}
    return SimpleNamespace(**{**defaults, **dict(config)})


def run_every_minute(meta):
    settings = load(meta.config)
    settings.limit += 1
    settings.extra = "set later"
    return {"vars": vars(settings), "repr": repr(settings), "eq": settings == SimpleNamespace(**vars(settings))}
