def run_every_minute(meta):
    # No dunder in the source, so it compiles; str.format would walk to the class graph at run
    # time: its fields go through the attribute guard, which refuses.
    template = "{0.__class__.__subclasses__}"
    return template.format(meta)
