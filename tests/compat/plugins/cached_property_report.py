from functools import cached_property


class Report:
    def __init__(self, rows):
        self.rows = rows
        self.computations = 0

    @cached_property
    def totals(self):
        self.computations += 1
        return {k: sum(v) for k, v in self.rows.items()}

    @cached_property
    def grand_total(self):
        return sum(self.totals.values())


def run_every_minute(meta):
    report = Report({"a": [1, 2], "b": [3]})
    first = report.grand_total
    second = report.grand_total
    report.totals["a"] = 100
    del report.grand_total
    return {"first": first, "second": second, "recomputed": report.grand_total, "computations": report.computations}
