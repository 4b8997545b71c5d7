# compat: {"config": {"events": ["login alice", "login bob", "logout alice", "login alice", "error disk"]}}
import textwrap
from collections import Counter


def summarize(events):
    kinds = Counter(e.split()[0] for e in events)
    users = Counter(e.split()[1] for e in events if e.startswith("login"))
    return kinds, users


def run_every_day(meta):
    kinds, users = summarize(meta.config["events"])
    lines = [f"{kind:<8}{n:>4}" for kind, n in kinds.most_common()]
    body = "\n".join(lines)
    report = textwrap.indent(body, "  ")
    top_user, logins = users.most_common(1)[0]
    return {"report": report, "top": top_user, "logins": logins}


run_every_minute = run_every_day
