import calendar
from datetime import date


def working_days(year, month):
    _, days = calendar.monthrange(year, month)
    return sum(1 for d in range(1, days + 1) if date(year, month, d).weekday() < 5)


def run_every_minute(meta):
    return {
        "feb_days": calendar.monthrange(2024, 2)[1],
        "leap": [calendar.isleap(y) for y in (2023, 2024, 2100)],
        "working": working_days(2024, 3),
        "name": calendar.month_name[3],
        "abbr": list(calendar.day_abbr)[:3],
        "weeks": len(calendar.monthcalendar(2024, 3)),
    }
