TABLE = []
while True:
    TABLE.append(len(TABLE))
    if len(TABLE) > 1000:
        TABLE = []


def run_every_minute(meta):
    return len(TABLE)
