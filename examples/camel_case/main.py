"""camel_case: `runEveryMinute` is scheduled exactly like `run_every_minute`."""


def runEveryMinute(meta):
    seen = meta.storage.get("seen", 0) + 1
    meta.storage.set("seen", seen)
    print("camelCase run", seen)
    return {"seen": seen, "task": meta.run.task}
