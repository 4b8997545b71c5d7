import uuid

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "plugins.example.com")


def stable_id(kind, key):
    return str(uuid.uuid5(NAMESPACE, f"{kind}:{key}"))


def run_every_minute(meta):
    random_id = uuid.uuid4()
    parsed = uuid.UUID("12345678-1234-5678-1234-567812345678")
    return {
        "stable": stable_id("order", 42),
        "again": stable_id("order", 42) == stable_id("order", 42),
        "v4": random_id.version,
        "hex": parsed.hex,
        "urn": parsed.urn,
    }
