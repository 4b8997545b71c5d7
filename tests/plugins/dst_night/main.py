def run_every_day(meta):
    return {"slot": meta.run.slot}


def run_every_hour(meta):
    return {"slot": meta.run.slot}


def half_past_two(meta):
    return {"slot": meta.run.slot}


def on_the_hour(meta):
    return {"slot": meta.run.slot}
