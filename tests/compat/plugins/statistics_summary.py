# compat: {"config": {"latencies_ms": [120, 95, 300, 101, 99, 250, 110, 98]}}
import statistics


def run_every_minute(meta):
    values = meta.config["latencies_ms"]
    q = statistics.quantiles(values, n=4)
    return {
        "mean": statistics.mean(values),
        "median": statistics.median(values),
        "stdev": round(statistics.stdev(values), 3),
        "quartiles": q,
        "mode": statistics.mode([1, 2, 2, 3]),
        "fmean": statistics.fmean([1.5, 2.5]),
        "slow": [v for v in values if v > q[2]],
    }
