def run_every_minute(meta):
    meta.storage.set("n", meta.storage.get("n", 0) + 1)
