# compat: {"allowed_hosts": ["api.example.com"], "fetch": {"https://api.example.com/items?page=1": {"json": [1, 2], "headers": {"Content-Type": "application/json", "X-Next-Page": "2", "ETag": "\"abc\""}}}}
def run_every_minute(meta):
    response = meta.fetch("https://api.example.com/items?page=1", headers={"If-None-Match": meta.storage.get("etag", "")})
    content_type = response.headers["content-type"]
    next_page = response.headers.get("x-next-page")
    meta.storage.set("etag", response.headers["ETAG"])
    return {"type": content_type, "next": next_page, "has": "x-missing" in response.headers, "items": response.json()}
