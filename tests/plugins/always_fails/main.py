def run_every_minute(meta):
    meta.logger.info("fetching page " + str(meta.run.attempt))
    raise ValueError("upstream said 503\nsecond line of the message")
