class Stats:
    def __init__(self):
        self.total = 0
        self.items = []
        self.flags = set()
        self.ratio = 1.0


def run_every_minute(meta):
    s = Stats()
    counts = {"a": 1, "b": 10}
    matrix = [[1, 2], [3, 4]]
    order = []

    def key(k):
        order.append(k)
        return k

    for n in range(1, 5):
        s.total += n
        s.items += [n]
        s.flags |= {n % 2}
        s.ratio *= 2
    counts["a"] += 5
    counts[key("b")] -= 3
    matrix[1][0] **= 2
    matrix[0][1:2] += [9]
    alias = s.items
    s.items += [99]
    text = "ab"
    text *= 2
    return {"total": s.total, "items": s.items, "alias_same": alias is s.items, "flags": sorted(s.flags),
            "ratio": s.ratio, "counts": counts, "matrix": matrix, "order": order, "text": text}
