from enum import Flag, IntEnum, StrEnum, auto, unique


class Perm(Flag):
    READ = auto()
    WRITE = auto()
    ADMIN = auto()
    RW = READ | WRITE


@unique
class Priority(IntEnum):
    LOW = 1
    NORMAL = 5
    HIGH = 10


class Channel(StrEnum):
    EMAIL = auto()
    SMS = auto()


def run_every_minute(meta):
    granted = Perm.READ | Perm.WRITE
    tasks = sorted([("b", Priority.HIGH), ("a", Priority.LOW), ("c", Priority.NORMAL)], key=lambda t: -t[1])
    return {
        "rw": granted == Perm.RW,
        "can_write": bool(granted & Perm.WRITE),
        "admin": Perm.ADMIN in granted,
        "tasks": [name for name, _ in tasks],
        "math": Priority.HIGH + 1,
        "lookup": Priority(5).name,
        "channel": [Channel.EMAIL.value, str(Channel.SMS), Channel("sms").name],
        "members": list(Priority.__members__),
    }
