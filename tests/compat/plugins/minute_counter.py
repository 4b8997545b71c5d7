# compat: {"storage": {"count": 41}}
def run_every_minute(meta):
    count = meta.storage.get("count", 0) + 1
    meta.storage.set("count", count)
    if count % 10 == 0:
        print(f"reached {count}")
    return count
