# compat: {"config": {"page": "<html><body><a href='/a'>A</a><p>text <a href=\"https://x.test/b\" rel=nofollow>B</a></p><img src='i.png'></body></html>"}}
from html.parser import HTMLParser


class LinkCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []
        self.text = []
        self._in_link = False

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._in_link = True
            self.links.append(dict(attrs))

    def handle_endtag(self, tag):
        if tag == "a":
            self._in_link = False

    def handle_data(self, data):
        if self._in_link:
            self.text.append(data)


def run_every_minute(meta):
    parser = LinkCollector()
    parser.feed(meta.config["page"])
    parser.close()
    return {"links": parser.links, "text": parser.text}
