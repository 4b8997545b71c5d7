import csv
import io


class Semicolon(csv.excel):
    delimiter = ";"
    quoting = csv.QUOTE_MINIMAL


def run_every_minute(meta):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["name", "note"], dialect=Semicolon)
    writer.writeheader()
    writer.writerows([{"name": "a", "note": "x;y"}, {"name": "b", "note": 'say "hi"'}])
    text = buffer.getvalue()
    back = list(csv.reader(io.StringIO(text), dialect=Semicolon))
    sniffed = csv.Sniffer().sniff("a,b,c\n1,2,3\n").delimiter
    return {"text": text, "back": back, "sniffed": sniffed}
