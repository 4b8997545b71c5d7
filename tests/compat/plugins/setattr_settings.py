# compat: {"config": {"timeout": "30", "verbose": "yes", "name": "sync"}}
class Settings:
    timeout = 10
    verbose = False
    name = "default"

    def __init__(self, **overrides):
        for key, value in overrides.items():
            if not hasattr(type(self), key):
                raise AttributeError(f"unknown setting {key}")
            current = getattr(type(self), key)
            if isinstance(current, bool):
                value = str(value).lower() in ("1", "yes", "true")
            elif isinstance(current, int):
                value = int(value)
            setattr(self, key, value)

    def as_dict(self):
        return {k: getattr(self, k) for k in ("timeout", "verbose", "name")}


def run_every_minute(meta):
    s = Settings(**meta.config)
    try:
        Settings(colour="red")
    except AttributeError as exc:
        err = str(exc)
    delattr(s, "name")
    return {"settings": s.as_dict(), "err": err, "vars": sorted(vars(s))}
