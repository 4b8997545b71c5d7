# compat: {"config": {"ids": [1, 2, 3, 4, 5, 6, 7], "events": [["a", 1], ["a", 2], ["b", 3], ["a", 4]]}}
from itertools import accumulate, chain, count, groupby, islice, pairwise, product, zip_longest


def batched(iterable, n):
    it = iter(iterable)
    while batch := list(islice(it, n)):
        yield batch


def run_every_minute(meta):
    events = meta.config["events"]
    groups = {k: [v for _, v in g] for k, g in groupby(sorted(events), key=lambda e: e[0])}
    return {
        "batches": list(batched(meta.config["ids"], 3)),
        "groups": groups,
        "running": list(accumulate([1, 2, 3, 4])),
        "pairs": list(pairwise("abcd")),
        "flat": list(chain.from_iterable([[1], [2, 3]])),
        "grid": ["".join(p) for p in product("ab", "12")],
        "numbered": list(zip(count(1), "xyz")),
        "longest": list(zip_longest([1, 2], ["a"], fillvalue=None)),
    }
