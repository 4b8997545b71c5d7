class History(list):
    """A list that keeps at most `limit` entries."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.dropped = 0

    def append(self, item):
        super().append(item)
        while len(self) > self.limit:
            del self[0]
            self.dropped += 1


def run_every_minute(meta):
    history = History(3)
    for event in "abcde":
        history.append(event)
    history[0] = history[0].upper()
    history[1:2] = ["x", "y"]
    history.sort(reverse=True)
    return {"items": list(history), "dropped": history.dropped, "limit": history.limit}
