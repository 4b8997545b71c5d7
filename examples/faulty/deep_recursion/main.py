def down(n):
    return down(n + 1) + 1


def run_every_minute(meta):
    return down(0)
