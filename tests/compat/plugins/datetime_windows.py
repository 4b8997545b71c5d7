from datetime import date, datetime, time, timedelta, timezone


def window(slot, hours):
    end = slot.replace(minute=0, second=0, microsecond=0)
    return end - timedelta(hours=hours), end


def run_every_minute(meta):
    slot = datetime.fromisoformat(meta.run.slot)
    start, end = window(slot, 24)
    parsed = datetime.strptime("2024-02-29 13:45", "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc)
    monday = slot.date() - timedelta(days=slot.weekday())
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "parsed": parsed.isoformat(),
        "monday": monday.isoformat(),
        "label": slot.strftime("%A %d %B %Y, %H:%M"),
        "days_to_new_year": (date(slot.year + 1, 1, 1) - slot.date()).days,
        "noon": datetime.combine(slot.date(), time(12)).isoformat(),
        "ts": int(slot.timestamp()),
    }
