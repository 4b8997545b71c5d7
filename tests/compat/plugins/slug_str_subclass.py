import re
import unicodedata


class Slug(str):
    def __new__(cls, text):
        normalized = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
        slug = re.sub(r"[^a-z0-9]+", "-", normalized.lower()).strip("-")
        return super().__new__(cls, slug)

    @property
    def words(self):
        return self.split("-")

    def __repr__(self):
        return f"Slug({str.__repr__(self)})"


def run_every_minute(meta):
    s = Slug("Crème Brûlée: Best Recipe!")
    return {"slug": s, "repr": repr(s), "words": s.words, "upper": s.upper(), "is_str": isinstance(s, str), "eq": s == "creme-brulee-best-recipe"}
