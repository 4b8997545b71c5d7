import json
import os


def run_every_minute(meta):
    return json.dumps(os.listdir("/"))
