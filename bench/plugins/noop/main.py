def run_every_minute(meta):
    pass
