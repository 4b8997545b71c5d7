def run_every_minute(meta):
    meta.logger.info("about to loop forever")
    n = 0
    while True:
        n += 1
