def half_hourly(meta):
    return {"slot": meta.run.slot}
