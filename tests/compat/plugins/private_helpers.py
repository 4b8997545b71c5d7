# compat: {"storage": {"_internal": 1}}
_CACHE = {}


def _key(*parts):
    return ":".join(str(p) for p in parts)


class _Store:
    def __init__(self):
        self._data = {}
        self.__secret = "name-mangled"

    def _put(self, key, value):
        self._data[key] = value
        _CACHE[key] = value

    def reveal(self):
        return self.__secret


def run_every_minute(meta):
    store = _Store()
    store._put(_key("a", 1), "x")
    store._put(_key("b", 2), "y")
    return {"data": store._data, "cache": sorted(_CACHE), "mangled": store.reveal(), "internal": meta.storage.get("_internal")}
