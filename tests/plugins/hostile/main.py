def run_every_minute(meta):
    kind = meta.config["kind"]
    if kind == "deep":
        value = []
        for _ in range(10000):
            value = [value]
        return value
    if kind == "nan":
        return {"value": float("nan"), "also": [float("inf")]}
    if kind == "surrogates":
        meta.logger.info("lone \ud800 surrogate and a NUL \x00")
        return "lone \udfff"
    if kind == "flood":
        line = "x" * 1000
        for _ in range(100000):
            print(line)
        return "flooded"
    if kind == "cache":
        for i in range(100000):
            meta.cache.set("key-" + str(i), "v" * 1000, ttl_s=600)
        return "filled"
    return "healthy"
