# compat: {"config": {"items": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "per_page": 4}}
class Paginator:
    def __init__(self, items, per_page):
        self.items = items
        self.per_page = per_page

    def __iter__(self):
        return PageIterator(self)

    def __len__(self):
        return -(-len(self.items) // self.per_page)


class PageIterator:
    def __init__(self, paginator):
        self.paginator = paginator
        self.page = 0

    def __iter__(self):
        return self

    def __next__(self):
        start = self.page * self.paginator.per_page
        if start >= len(self.paginator.items):
            raise StopIteration
        self.page += 1
        return self.paginator.items[start:start + self.paginator.per_page]


def run_every_minute(meta):
    pages = Paginator(meta.config["items"], meta.config["per_page"])
    return {"count": len(pages), "pages": list(pages), "sums": [sum(p) for p in pages]}
