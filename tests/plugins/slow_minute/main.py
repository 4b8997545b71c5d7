import time


def run_every_minute(meta):
    time.sleep(meta.config["sleep_s"])
    return {"slot": meta.run.slot}
