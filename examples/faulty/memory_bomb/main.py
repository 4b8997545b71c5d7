def run_every_minute(meta):
    hoard = []
    while True:
        hoard.append("x" * (8 * 1024 * 1024))
