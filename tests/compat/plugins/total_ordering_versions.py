# compat: {"config": {"versions": ["1.10.0", "1.2.3", "1.2.10", "0.9", "1.2.3"]}}
from functools import total_ordering


@total_ordering
class Version:
    def __init__(self, text):
        self.parts = tuple(int(p) for p in text.split("."))
        self.text = text

    def __eq__(self, other):
        return self.parts == other.parts

    def __lt__(self, other):
        return self.parts < other.parts

    def __hash__(self):
        return hash(self.parts)

    def __str__(self):
        return self.text


def run_every_minute(meta):
    versions = [Version(v) for v in meta.config["versions"]]
    newest = max(versions)
    return {
        "sorted": [str(v) for v in sorted(versions)],
        "newest": str(newest),
        "ge": Version("2.0") >= newest,
        "le": Version("0.1") <= Version("0.1"),
        "unique": len(set(versions)),
    }
