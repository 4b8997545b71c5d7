def run_every_day(meta):
    return {"slot": meta.run.slot}
