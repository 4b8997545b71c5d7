"""Process logging: readable text on a terminal, one JSON object per line with --log-format json.
Lines about a run carry its run id, config id, task, slot, outcome and (failed runs) its
error, `Type: first line of the message`."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from runtime.jsonable import iso_utc
from runtime.text import visible

RUN_FIELDS = ("run_id", "config_id", "task", "slot", "outcome", "error")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": iso_utc(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in RUN_FIELDS:
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    """Readable lines whose message has its control characters escaped: a message may quote a
    plugin's text (an error, a name), which must not drive the operator's terminal. (JSON lines
    are safe as they are: the encoder escapes control characters.)"""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - stdlib name
        record.message = visible(record.message)
        return super().formatMessage(record)


def setup_logging(fmt: str | None = None, level: str = "info") -> None:
    """`fmt`: "json", "text", or None (text on a terminal, JSON otherwise)."""
    if fmt is None:
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # the embedded server's chatter
