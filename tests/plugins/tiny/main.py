def run_every_minute(meta):
    count = meta.storage.get("count", 0) + 1
    meta.storage.set("count", count)
    meta.logger.info("tick " + str(count))
    return {"count": count}


def run_every_hour(meta):
    return {"greeting": meta.config.get("greeting", "hello")}
