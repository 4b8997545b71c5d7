# compat: {"config": {"items": [{"title": "Fish & Chips", "url": "https://x.test/?a=1&b=2"}, {"title": "<script>alert(1)</script>", "url": "https://x.test/s"}]}}
import html


def render(items):
    rows = []
    for item in items:
        title = html.escape(item["title"])
        href = html.escape(item["url"], quote=True)
        rows.append(f'<li><a href="{href}">{title}</a></li>')
    return "<ul>\n" + "\n".join(rows) + "\n</ul>"


def run_every_minute(meta):
    body = render(meta.config["items"])
    return {"html": body, "roundtrip": html.unescape(html.escape("a < b & c"))}
