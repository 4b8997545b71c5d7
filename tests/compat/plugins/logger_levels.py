# compat: {"config": {"threshold": 80}}
def run_every_minute(meta):
    usage = {"/": 91, "/data": 42, "/tmp": 80}
    for mount, pct in sorted(usage.items()):
        if pct >= meta.config["threshold"]:
            meta.logger.warning("disk", mount, "at", f"{pct}%")
        else:
            meta.logger.debug("disk", mount, "ok")
    meta.logger.info("checked", len(usage), "mounts")
    meta.logger.error("example error line")
    print("done", "checking", sep="-")
    return sorted(m for m, p in usage.items() if p >= meta.config["threshold"])
