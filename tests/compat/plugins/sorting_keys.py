# compat: {"config": {"people": [{"name": "Zoe", "age": 30, "city": "Oslo"}, {"name": "adam", "age": 25, "city": "Rome"}, {"name": "Bea", "age": 30, "city": "Lima"}]}}
from functools import cmp_to_key
from operator import attrgetter, itemgetter


class Person:
    def __init__(self, name, age, city):
        self.name, self.age, self.city = name, age, city

    def __repr__(self):
        return f"Person({self.name!r})"


def by_age_then_name(a, b):
    return (a["age"] - b["age"]) or ((a["name"].lower() > b["name"].lower()) - (a["name"].lower() < b["name"].lower()))


def run_every_minute(meta):
    people = meta.config["people"]
    objects = [Person(**p) for p in people]
    return {
        "by_name": [p["name"] for p in sorted(people, key=lambda p: p["name"].lower())],
        "by_age_desc": [p["name"] for p in sorted(people, key=itemgetter("age", "name"), reverse=True)],
        "cmp": [p["name"] for p in sorted(people, key=cmp_to_key(by_age_then_name))],
        "attr": repr(sorted(objects, key=attrgetter("city"))),
        "oldest": max(objects, key=attrgetter("age")).name,
    }
