# compat: {"config": {"jobs": {"backup": 12, "report": 0, "sync": 3}}}
def run_every_minute(meta):
    failed = 0
    for name, errors in sorted(meta.config["jobs"].items()):
        if errors:
            meta.logger.warning("job %s had %d error(s)", name, errors)
            failed += 1
        else:
            meta.logger.info("job %s ok", name)
    meta.logger.info("%(failed)d of %(total)d jobs failed", {"failed": failed, "total": len(meta.config["jobs"])})
    meta.logger.debug("rate: %.1f%%", 100 * failed / len(meta.config["jobs"]))
    return failed
