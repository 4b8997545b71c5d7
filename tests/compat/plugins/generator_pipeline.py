# compat: {"config": {"lines": ["# comment", "temp=21", "", "hum=40", "temp=23", "bad line"]}}
def read(lines):
    for line in lines:
        yield line.strip()


def parse(lines):
    for line in lines:
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        yield key, float(value)


def averager():
    total, count, average = 0.0, 0, None
    while True:
        value = yield average
        total += value
        count += 1
        average = total / count


def run_every_minute(meta):
    pairs = list(parse(read(meta.config["lines"])))
    avg = averager()
    next(avg)
    running = [avg.send(v) for k, v in pairs if k == "temp"]
    squares = sum(x * x for x in range(10))
    gen = (k for k, _ in pairs)
    return {"pairs": pairs, "running": running, "squares": squares, "first": next(gen), "rest": list(gen)}
