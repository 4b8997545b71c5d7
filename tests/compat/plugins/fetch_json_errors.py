# compat: {"allowed_hosts": ["status.example.com"], "fetch": {"https://status.example.com/v1/status": {"json": {"components": [{"name": "api", "status": "up"}, {"name": "db", "status": "degraded"}]}, "headers": {"Content-Type": "application/json"}}, "https://status.example.com/v1/missing": {"status": 404, "body": "no"}}}
from plugin_runtime import FetchError


def check(meta, url):
    try:
        response = meta.fetch(url, timeout_s=5)
    except FetchError as exc:
        return {"error": type(exc).__name__}
    if not response.ok:
        return {"status": response.status}
    data = response.json()
    bad = [c["name"] for c in data["components"] if c["status"] != "up"]
    return {"degraded": bad, "type": response.headers.get("Content-Type")}


def run_every_minute(meta):
    results = [
        check(meta, "https://status.example.com/v1/status"),
        check(meta, "https://status.example.com/v1/missing"),
        check(meta, "https://evil.example.net/steal"),
    ]
    for r in results:
        meta.logger.info("check", r)
    return results
