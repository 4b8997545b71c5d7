import difflib


def run_every_minute(meta):
    old = ["alpha", "beta", "gamma"]
    new = ["alpha", "beta2", "gamma", "delta"]
    diff = list(difflib.unified_diff(old, new, fromfile="old", tofile="new", lineterm=""))
    ratio = difflib.SequenceMatcher(None, "kitten", "sitting").ratio()
    return {"diff": diff, "ratio": round(ratio, 3), "close": difflib.get_close_matches("appel", ["ape", "apple", "peach"])}
