# compat: {"config": {"max_per_minute": 3}}
def run_every_minute(meta):
    allowed = []
    for i in range(5):
        n = meta.cache.incr("calls", ttl_s=60)
        allowed.append(n <= meta.config["max_per_minute"])
    meta.cache.set("last", {"i": 4})
    last = meta.cache.get("last")
    meta.cache.delete("last")
    return {"allowed": allowed, "last": last, "gone": meta.cache.get("last", "gone")}
