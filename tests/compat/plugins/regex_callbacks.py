# compat: {"config": {"text": "Order #123 shipped to ann@example.com on 2024-03-01; order #7 pending."}}
import re

ORDER = re.compile(r"#(?P<num>\d+)")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


def pad(match):
    return "#" + match.group("num").zfill(5)


def run_every_minute(meta):
    text = meta.config["text"]
    padded = ORDER.sub(pad, text)
    masked = EMAIL.sub(lambda m: m.group(0)[0] + "***", padded)
    european = DATE.sub(r"\3.\2.\1", masked)
    found = [m.groupdict() for m in ORDER.finditer(text)]
    first = re.search(r"(\w+) pending", text)
    return {
        "out": european,
        "found": found,
        "pending": first.group(1) if first else None,
        "split": re.split(r"[;,]\s*", "a, b;c"),
        "flags": bool(re.match("order", text, re.IGNORECASE)),
    }
