from contextlib import ExitStack, closing, contextmanager, nullcontext, suppress


@contextmanager
def tag(log, name):
    log.append(f"<{name}>")
    try:
        yield name.upper()
    finally:
        log.append(f"</{name}>")


class Resource:
    def __init__(self, log, name):
        self.log = log
        self.name = name

    def close(self):
        self.log.append(f"closed {self.name}")


def run_every_minute(meta):
    log = []
    with tag(log, "report") as upper:
        log.append(upper)
        with tag(log, "row"):
            log.append("cell")
    with suppress(KeyError):
        {}["missing"]
    with closing(Resource(log, "conn")) as res:
        log.append(f"using {res.name}")
    with ExitStack() as stack:
        for name in ("a", "b"):
            stack.enter_context(tag(log, name))
    with nullcontext(42) as value:
        log.append(value)
    return log
