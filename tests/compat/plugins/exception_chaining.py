class ParseError(Exception):
    def __init__(self, line, reason):
        super().__init__(f"line {line}: {reason}")
        self.line = line


def parse(lines):
    out = []
    for n, line in enumerate(lines, start=1):
        try:
            key, value = line.split("=")
            out.append((key, int(value)))
        except ValueError as exc:
            raise ParseError(n, "expected key=int") from exc
    return out


def run_every_minute(meta):
    try:
        parse(["a=1", "b=two"])
    except ParseError as exc:
        cause = exc.__cause__
        info = {"msg": str(exc), "line": exc.line, "cause": type(cause).__name__, "args": list(exc.args)}
    try:
        try:
            {}["k"]
        except KeyError:
            raise RuntimeError("lookup failed")
    except RuntimeError as exc:
        info["context"] = type(exc.__context__).__name__
    try:
        raise ExceptionGroup("many", [ValueError("a"), TypeError("b")])
    except ExceptionGroup as group:
        info["group"] = sorted(type(e).__name__ for e in group.exceptions)
    return info
