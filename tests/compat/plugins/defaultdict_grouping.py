# compat: {"config": {"rows": [["eu", "fr", 3], ["eu", "de", 5], ["us", "ny", 2], ["eu", "fr", 1]]}}
from collections import OrderedDict, defaultdict


def run_every_minute(meta):
    by_region = defaultdict(lambda: defaultdict(int))
    totals = defaultdict(int)
    for region, city, n in meta.config["rows"]:
        by_region[region][city] += n
        totals[region] += n
    ordered = OrderedDict(sorted(totals.items(), key=lambda kv: -kv[1]))
    ordered.move_to_end("eu")
    return {
        "by_region": {r: dict(c) for r, c in by_region.items()},
        "order": list(ordered),
        "top": max(totals, key=totals.get),
    }
