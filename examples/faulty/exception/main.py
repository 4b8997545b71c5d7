def parse_amount(text):
    return int(text)


def run_every_minute(meta):
    meta.storage.set("should_not_persist", True)
    meta.logger.info("parsing the amount")
    return parse_amount("twelve")
