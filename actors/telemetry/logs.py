"""Logging set-up: stdlib logging to stderr, as text or as one JSON object per line."""

from __future__ import annotations

import json
import logging
import re
import sys

_SID = re.compile(r"\bsession ([A-Za-z0-9_-]{16,})")


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "sid"?}``; ``sid`` when the line is about a session."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry = {"ts": record.created, "level": record.levelname.lower(), "logger": record.name, "message": message}
        match = _SID.search(message)
        if match:
            entry["sid"] = match.group(1)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


def setup(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
