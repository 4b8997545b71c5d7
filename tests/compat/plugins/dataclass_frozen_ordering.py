from dataclasses import FrozenInstanceError, dataclass, field, replace


@dataclass(frozen=True, order=True)
class Release:
    major: int
    minor: int
    patch: int = 0
    label: str = field(default="", compare=False)

    @classmethod
    def parse(cls, text):
        major, minor, patch = (int(p) for p in text.split("."))
        return cls(major, minor, patch)

    def bump(self, part):
        if part == "major":
            return replace(self, major=self.major + 1, minor=0, patch=0)
        if part == "minor":
            return replace(self, minor=self.minor + 1, patch=0)
        return replace(self, patch=self.patch + 1)


def run_every_minute(meta):
    r = Release.parse("1.4.2")
    try:
        r.major = 2
    except FrozenInstanceError:
        frozen = True
    releases = sorted([r.bump("major"), r, r.bump("patch"), Release(1, 4, 2, "dup")])
    return {
        "frozen": frozen,
        "sorted": [repr(x) for x in releases],
        "hashable": len({r, Release(1, 4, 2, "other label")}),
        "bumped": repr(r.bump("minor")),
    }
