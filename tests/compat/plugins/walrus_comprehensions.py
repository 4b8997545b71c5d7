# compat: {"config": {"readings": ["12.5", "x", "13.0", "", "99.9", "-1"]}}
def parse(text):
    try:
        return float(text)
    except ValueError:
        return None


def run_every_minute(meta):
    raw = meta.config["readings"]
    valid = [v for r in raw if (v := parse(r)) is not None and v >= 0]
    lookup = {i: v for i, v in enumerate(valid) if v < 50}
    unique = {round(v) for v in valid}
    nested = [[i * j for j in range(3)] for i in range(3)]
    flat = [x for row in nested for x in row if x]
    total = sum(v for v in valid)
    return {"valid": valid, "lookup": lookup, "unique": sorted(unique), "flat": flat, "total": total,
            "any_big": any(v > 50 for v in valid), "first_big": next((v for v in valid if v > 50), None)}
