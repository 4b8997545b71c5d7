"""daily_report: a daily report and an order sync every 15 minutes (cron, in plugin.json).

Both use `meta.run.slot`, the nominal UTC time the run is for (not the time it runs), so a
backfilled run (`meta.run.backfilled`, late because a slot was missed) reports on the right day.
"""

import datetime


def slot_time(meta):
    if meta.run.slot:
        return datetime.datetime.fromisoformat(str(meta.run.slot).replace("Z", "+00:00"))
    return datetime.datetime.now(datetime.timezone.utc).replace(second=0, microsecond=0)


def run_every_day(meta):
    slot = slot_time(meta)
    day = (slot - datetime.timedelta(days=1)).date().isoformat()
    reports = meta.storage.get("reports", [])
    reports = (reports + [day])[-30:]
    meta.storage.set("reports", reports)
    note = " (backfilled)" if meta.run.backfilled else ""
    meta.logger.info(f"{meta.config.get('title', 'Daily report')} for {day}{note}")
    return {"day": day, "slot": slot.isoformat(), "backfilled": meta.run.backfilled,
            "orders_synced": meta.storage.get("orders_synced", 0)}


def sync_orders(meta):
    slot = slot_time(meta)
    synced = meta.storage.get("orders_synced", 0) + 1
    meta.storage.set("orders_synced", synced)
    meta.storage.set("last_sync_slot", slot.isoformat())
    if meta.run.backfilled:
        meta.logger.warning(f"catching up on the sync for {slot.isoformat()}")
    else:
        meta.logger.info(f"order sync for {slot.isoformat()}")
    return {"slot": slot.isoformat(), "backfilled": meta.run.backfilled, "syncs": synced}
