"""What the daemon lets operators see: metrics, the event stream, the audit log.

`Observers` is handed to the dispatcher, every session actor and the
supervisor. Each channel has one owner: prometheus-client serialises its own
counters, events go through the hub's mailbox to its PUB socket, audit
records go to the `AuditLog` actor, which alone holds the file.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pykka

from mcp_troupe.actors.telemetry.metrics import Metrics

log = logging.getLogger("troupe.audit")

Publish = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Observers:
    metrics: Metrics = field(default_factory=Metrics)
    publish: Publish = lambda _topic, _fields: None
    """Sends an event on the event stream: a topic such as ``session.closed`` and JSON fields."""
    audit: Callable[[dict[str, Any]], None] = lambda _record: None
    """Appends a record to the audit log (when one is configured)."""


def hub_publisher(publish: Callable[[str, bytes], None]) -> Publish:
    """Events as ``[topic, JSON]`` two-part messages, stamped with the wall-clock time."""

    def send(topic: str, fields: dict[str, Any]) -> None:
        publish(topic, json.dumps({"topic": topic, "ts": time.time(), **fields}, separators=(",", ":")).encode())

    return send


class AuditLog(pykka.ThreadingActor):
    """Appends JSON lines to the audit file; the only holder of its handle."""

    use_daemon_thread = True

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._file: TextIO | None = None

    def on_start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def on_receive(self, message: Any) -> None:
        assert self._file is not None
        record = {"ts": time.time(), **message}
        self._file.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        self._file.flush()

    def on_stop(self) -> None:
        if self._file is not None:
            self._file.close()
