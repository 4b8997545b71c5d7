# compat: {"config": {"user": "ann", "count": 3}}
from string import Template

MESSAGE = Template("Hello $user, you have ${count} new $what.")


class Brackets(Template):
    delimiter = "%"


def run_every_minute(meta):
    text = MESSAGE.safe_substitute(user=meta.config["user"], count=meta.config["count"])
    full = MESSAGE.substitute(dict(meta.config), what="messages")
    try:
        MESSAGE.substitute(user="x")
    except KeyError as exc:
        missing = str(exc)
    return {"partial": text, "full": full, "missing": missing, "custom": Brackets("%user!").substitute(user="bo")}
