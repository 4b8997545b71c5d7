# compat: {"config": {"overrides": {"db": {"port": 6543}, "debug": true}}}
import copy

DEFAULTS = {"db": {"host": "localhost", "port": 5432}, "debug": False, "features": ["a"]}


def deep_merge(base, override):
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = value
    return result


def run_every_minute(meta):
    merged = deep_merge(DEFAULTS, meta.config["overrides"])
    merged["features"].append("b")
    shallow = copy.copy(DEFAULTS)
    shallow["debug"] = "changed"
    return {"merged": merged, "defaults_untouched": DEFAULTS, "union": {"a": 1} | {"b": 2}}
