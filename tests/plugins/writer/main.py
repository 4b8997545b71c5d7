import time


def run_every_hour(meta):
    meta.storage.set("cursor", (meta.storage.get("cursor") or 0) + 1)
    meta.storage.delete("old")
    time.sleep(meta.config["sleep_s"])
    if meta.config["fail"]:
        raise ValueError("failed after writing storage")
    return meta.storage.get("cursor")
