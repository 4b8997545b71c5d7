def run_every_minute(meta):
    while True:
        pass
