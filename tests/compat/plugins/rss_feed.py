# compat: {"allowed_hosts": ["blog.example.com"], "fetch": {"https://blog.example.com/feed.xml": {"body": "<?xml version='1.0'?><rss version='2.0'><channel><title>Blog</title><item><title>First</title><link>https://blog.example.com/1</link><pubDate>Mon, 01 Jan 2024 10:00:00 GMT</pubDate></item><item><title>Second</title><link>https://blog.example.com/2</link></item></channel></rss>"}}, "storage": {"seen": ["https://blog.example.com/1"]}}
import xml.etree.ElementTree as ET


def run_every_minute(meta):
    response = meta.fetch("https://blog.example.com/feed.xml")
    root = ET.fromstring(response.text)
    seen = set(meta.storage.get("seen", []))
    new = []
    for item in root.iter("item"):
        link = item.findtext("link")
        if link not in seen:
            new.append({"title": item.findtext("title"), "link": link, "date": item.findtext("pubDate", "")})
            seen.add(link)
    meta.storage.set("seen", sorted(seen))
    out = ET.Element("digest", count=str(len(new)))
    for entry in new:
        ET.SubElement(out, "entry").text = entry["title"]
    return {"channel": root.find("channel/title").text, "new": new, "xml": ET.tostring(out, encoding="unicode")}
