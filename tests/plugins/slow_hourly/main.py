import time


def run_every_hour(meta):
    time.sleep(meta.config["sleep_s"])
    return {"slot": meta.run.slot, "attempt": meta.run.attempt}
