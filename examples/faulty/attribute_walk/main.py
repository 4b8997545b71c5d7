def run_every_minute(meta):
    # The classic escape: from any object to every class loaded in the interpreter
    # (and from there to os, subprocess, ...). Refused when the plugin is compiled.
    return len(().__class__.__bases__[0].__subclasses__())
