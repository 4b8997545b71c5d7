# compat: {"config": {"rows": [["alice", 12.5, 3], ["bob", 7.0, 11]]}}
def run_every_minute(meta):
    header = "{:<8}|{:>8}|{:>4}".format("name", "amount", "n")
    lines = [header, "-" * len(header)]
    for name, amount, n in meta.config["rows"]:
        lines.append("{0:<8}|{1:>8.2f}|{2:>4d}".format(name, amount, n))
    summary = "{who} paid {total:,.2f} in {count} orders".format_map(
        {"who": "everyone", "total": 1234.5, "count": 14}
    )
    legacy = "%s has %d items (%.1f%%)" % ("cart", 3, 42.123)
    padded = format(7, "03d") + format(0.5, ".0%")
    return {"table": "\n".join(lines), "summary": summary, "legacy": legacy, "padded": padded}
