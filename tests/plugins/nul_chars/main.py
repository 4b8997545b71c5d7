def run_every_hour(meta):
    print("log with a NUL: a\x00b")
    if meta.config["store_nul"]:
        meta.storage.set("k", "x\x00y")
    return {"text": "result with a NUL: \x00", "k\x00": 1}
