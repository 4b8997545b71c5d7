def run_every_hour(meta):
    meta.storage.set("last_slot", meta.run.slot)
    return {"slot": meta.run.slot, "attempt": meta.run.attempt}
