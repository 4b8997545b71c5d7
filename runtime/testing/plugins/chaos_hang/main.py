import time


def run_every_minute(meta):
    time.sleep(3600)  # hangs (blocked, as on a dead connection) until its 2 s timeout
