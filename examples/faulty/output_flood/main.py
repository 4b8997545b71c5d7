def run_every_minute(meta):
    i = 0
    while True:
        i += 1
        meta.logger.info("flood line " + str(i) + " " + "y" * 200)
