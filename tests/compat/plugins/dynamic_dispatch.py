# compat: {"config": {"events": [{"type": "created", "id": 1}, {"type": "deleted", "id": 1}, {"type": "renamed", "id": 2}]}}
class Handler:
    def __init__(self):
        self.log = []

    def handle(self, event):
        method = getattr(self, f"on_{event['type']}", None)
        if method is None:
            return self.fallback(event)
        return method(event)

    def on_created(self, event):
        self.log.append(f"+{event['id']}")

    def on_deleted(self, event):
        self.log.append(f"-{event['id']}")

    def fallback(self, event):
        self.log.append(f"?{event['type']}")


def run_every_minute(meta):
    handler = Handler()
    for event in meta.config["events"]:
        handler.handle(event)
    return {"log": handler.log, "has": [hasattr(handler, n) for n in ("on_created", "on_renamed")]}
