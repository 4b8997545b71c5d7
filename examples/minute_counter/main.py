"""minute_counter: keeps a counter in storage, logs it and returns it."""


def run_every_minute(meta):
    count = meta.storage.get("count", 0) + 1
    meta.storage.set("count", count)
    meta.logger.info(f"run number {count}")
    return {"count": count}
