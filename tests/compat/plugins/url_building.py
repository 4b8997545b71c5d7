# compat: {"config": {"base": "https://api.example.com/v2/", "params": {"q": "caf\u00e9 & bar", "page": 2, "tags": ["a", "b"]}}}
from urllib.parse import parse_qs, quote, urlencode, urljoin, urlparse, urlunparse


def run_every_minute(meta):
    base = meta.config["base"]
    query = urlencode(meta.config["params"], doseq=True)
    url = urljoin(base, "search") + "?" + query
    parts = urlparse(url)
    rebuilt = urlunparse(parts._replace(fragment="top"))
    return {
        "url": url,
        "host": parts.netloc,
        "path": parts.path,
        "query": parse_qs(parts.query),
        "rebuilt": rebuilt,
        "quoted": quote("a b/c", safe=""),
    }
