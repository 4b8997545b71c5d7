def run_every_hour(meta):
    if meta.run.attempt < meta.config["succeed_on_attempt"]:
        raise RuntimeError("attempt " + str(meta.run.attempt) + " fails on purpose")
    return {"attempt": meta.run.attempt, "backfilled": meta.run.backfilled}
