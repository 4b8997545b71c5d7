class CaseInsensitiveDict(dict):
    def __init__(self, *args, **kwargs):
        super().__init__()
        self.update(*args, **kwargs)

    def __setitem__(self, key, value):
        super().__setitem__(key.lower(), value)

    def __getitem__(self, key):
        return super().__getitem__(key.lower())

    def __delitem__(self, key):
        super().__delitem__(key.lower())

    def __contains__(self, key):
        return super().__contains__(key.lower())

    def get(self, key, default=None):
        return super().get(key.lower(), default)

    def update(self, *args, **kwargs):
        for k, v in dict(*args, **kwargs).items():
            self[k] = v


def run_every_minute(meta):
    headers = CaseInsensitiveDict({"Content-Type": "application/json"}, Accept="*/*")
    headers["X-Request-Id"] = "abc"
    headers["x-request-id"] += "-1"
    del headers["ACCEPT"]
    return {
        "items": sorted(headers.items()),
        "has": "CONTENT-TYPE" in headers,
        "get": headers.get("x-REQUEST-id"),
        "missing": headers.get("nope", "default"),
    }
