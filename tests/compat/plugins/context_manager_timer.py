class Section:
    """Collects named steps; marks the ones that raised."""

    def __init__(self, name, journal):
        self.name = name
        self.journal = journal

    def __enter__(self):
        self.journal.append(f"start {self.name}")
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.journal.append(f"done {self.name}")
            return False
        self.journal.append(f"failed {self.name}: {exc}")
        return issubclass(exc_type, ValueError)  # swallow ValueErrors only


def run_every_minute(meta):
    journal = []
    with Section("load", journal):
        data = [1, 2, 3]
    with Section("parse", journal) as section:
        int("not a number")
    try:
        with Section("divide", journal):
            1 / 0
    except ZeroDivisionError:
        journal.append("caught division")
    return {"journal": journal, "name": section.name, "n": len(data)}
