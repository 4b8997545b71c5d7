def make_counter(start=0):
    count = start

    def increment(by=1):
        nonlocal count
        count += by
        return count

    return increment


def make_rate_limiter(limit):
    calls = []

    def allow(now):
        calls[:] = [t for t in calls if now - t < 60]
        if len(calls) < limit:
            calls.append(now)
            return True
        return False

    return allow


def run_every_minute(meta):
    counter = make_counter(10)
    values = [counter(), counter(5), counter()]
    allow = make_rate_limiter(2)
    decisions = [allow(t) for t in (0, 10, 20, 70, 75)]
    adders = [lambda x, n=n: x + n for n in range(3)]
    return {"values": values, "decisions": decisions, "adders": [f(10) for f in adders]}
