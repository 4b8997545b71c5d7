class SyncError(Exception):
    """Base class of this plugin's errors."""


class RemoteError(SyncError):
    def __init__(self, status, body=""):
        super().__init__(f"remote answered {status}")
        self.status = status
        self.body = body

    @property
    def retryable(self):
        return self.status >= 500


class ValidationError(SyncError):
    def __init__(self, errors):
        self.errors = errors
        super().__init__("; ".join(errors))

    def __str__(self):
        return f"{len(self.errors)} invalid field(s): {super().__str__()}"


def handle(status):
    if status >= 400:
        raise RemoteError(status, body="oops")
    return "ok"


def run_every_minute(meta):
    outcomes = []
    for status in (200, 404, 503):
        try:
            outcomes.append(handle(status))
        except RemoteError as exc:
            outcomes.append([exc.status, exc.retryable, str(exc), isinstance(exc, SyncError)])
    try:
        raise ValidationError(["name missing", "age < 0"])
    except SyncError as exc:
        outcomes.append(str(exc))
        outcomes.append(exc.errors)
    return outcomes
