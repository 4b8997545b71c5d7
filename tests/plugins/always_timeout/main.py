def run_every_minute(meta):
    meta.logger.info("looping forever")
    n = 0
    while True:
        n += 1
