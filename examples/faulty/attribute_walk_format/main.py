def run_every_minute(meta):
    # No dunder in the source, so it compiles; str.format would reach obj.__class__ at run
    # time, which the attribute guard refuses.
    template = "{0.__class__}"
    return template.format(meta)
