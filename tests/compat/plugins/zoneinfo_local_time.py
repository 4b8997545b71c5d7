# compat: {"config": {"zones": ["Europe/Paris", "America/New_York", "Asia/Tokyo", "UTC"]}}
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo


def business_hours(local):
    return local.weekday() < 5 and 9 <= local.hour < 18


def run_every_minute(meta):
    slot = datetime.fromisoformat(meta.run.slot)
    report = {}
    for name in meta.config["zones"]:
        local = slot.astimezone(ZoneInfo(name))
        report[name] = {
            "local": local.isoformat(),
            "open": business_hours(local),
            "offset_h": local.utcoffset() / timedelta(hours=1),
            "abbr": local.tzname(),
        }
    summer = datetime(2024, 7, 1, 12, tzinfo=timezone.utc).astimezone(ZoneInfo("Europe/Paris"))
    report["summer"] = summer.isoformat()
    return report
