# compat: {"config": {"csv": "sku,qty,price\nA-1,3,2.50\nB-2,0,9.99\nC-3,12,0.10\n"}}
import csv
import io


def run_every_minute(meta):
    reader = csv.DictReader(io.StringIO(meta.config["csv"]))
    in_stock = []
    value = 0.0
    for row in reader:
        qty = int(row["qty"])
        if qty:
            in_stock.append(row["sku"])
        value += qty * float(row["price"])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["sku", "status"])
    for sku in in_stock:
        writer.writerow([sku, "ok"])
    return {"in_stock": in_stock, "value": round(value, 2), "fields": reader.fieldnames, "csv": out.getvalue()}
