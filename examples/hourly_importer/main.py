"""hourly_importer: pages through `GET {base_url}/items?cursor=...` a page or more per run.

The API answers `{"items": [...], "next_cursor": "..." | null}`. The cursor and the running total
live in storage, so each run continues where the last successful one stopped; a failed run
changes nothing (its storage writes are dropped) and the next run retries the same page.
"""

import urllib.parse


def page_url(base_url, cursor):
    url = base_url.rstrip("/") + "/items"
    if cursor:
        url += "?" + urllib.parse.urlencode({"cursor": cursor})
    return url


def run_every_hour(meta):
    base_url = meta.config["base_url"]
    headers = {"X-Api-Key": meta.config["api_key"], "Accept": "application/json"}
    cursor = meta.storage.get("cursor")
    total = meta.storage.get("total", 0)
    imported = 0
    pages = 0
    done = meta.storage.get("done", False)
    for _ in range(max(1, int(meta.config.get("max_pages", 1)))):
        if done:
            break
        response = meta.fetch(page_url(base_url, cursor), headers=headers, timeout_s=10)
        if not response.ok:
            raise RuntimeError(f"GET {response.url} answered {response.status}")
        page = response.json()
        items = page.get("items", [])
        imported += len(items)
        pages += 1
        next_cursor = page.get("next_cursor")
        if next_cursor:
            cursor = next_cursor
        else:
            done = True
    total += imported
    meta.storage.set("cursor", cursor)
    meta.storage.set("total", total)
    meta.storage.set("done", done)
    meta.logger.info(f"imported {imported} items in {pages} page(s); total {total}; cursor {cursor}")
    return {"imported": imported, "pages": pages, "total": total, "cursor": cursor, "done": done}
