import pprint


def run_every_minute(meta):
    data = {"users": [{"name": "ann", "roles": ["admin", "dev"]}, {"name": "bob", "roles": []}], "count": 2}
    text = pprint.pformat(data, width=40, sort_dicts=True)
    for line in text.splitlines():
        print(line)
    return {"lines": len(text.splitlines()), "safe": pprint.isreadable(data)}
