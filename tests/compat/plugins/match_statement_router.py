# compat: {"config": {"commands": [["go", "north"], ["look"], ["take", "lamp", "now"]]}}
def route(command):
    match command:
        case ["go", direction]:
            return f"going {direction}"
        case ["look"]:
            return "you see a room"
        case ["take", *things]:
            return f"taking {', '.join(things)}"
        case _:
            return "unknown"


def run_every_minute(meta):
    return [route(c) for c in meta.config["commands"]]
