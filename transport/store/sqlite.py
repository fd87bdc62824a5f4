"""`SqliteStore`: the embedded session store, one SQLite file in the daemon's state directory.

WAL mode with ``synchronous=NORMAL``: a batch is one transaction, readers never block the writer,
and a committed batch survives the daemon's death (kill -9); only a power loss can take the last
transactions back. A connection belongs to the thread that made it (the store actor's).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

STORE_FILE: Final = "sessions.sqlite3"

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS sessions ( sid TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL, body BLOB NOT NULL)"
)


class SqliteStore:
    def __init__(self, path: Path, *, timeout: float = 5.0) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fresh = not path.exists()
        self._db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=True)
        if fresh:
            os.chmod(path, 0o600)  # records name owners and hold handshakes: the user's alone
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def write(self, batch: Iterable[tuple[str, int, bytes | None]]) -> None:
        rows = list(batch)
        db = self._db
        db.execute("BEGIN")
        try:
            upserts = [(sid, version, body) for sid, version, body in rows if body is not None]
            deletes = [(sid,) for sid, _version, body in rows if body is None]
            if upserts:
                db.executemany("INSERT OR REPLACE INTO sessions (sid, version, body) VALUES (?, ?, ?)", upserts)
            if deletes:
                db.executemany("DELETE FROM sessions WHERE sid = ?", deletes)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def load(self) -> Iterator[tuple[str, int, bytes]]:
        for sid, version, body in self._db.execute("SELECT sid, version, body FROM sessions"):
            if not isinstance(sid, str) or not isinstance(version, int):
                yield str(sid), -1, b""  # a row of the wrong types: decoding refuses it
                continue
            yield sid, version, body if isinstance(body, bytes) else str(body).encode()

    def close(self) -> None:
        self._db.close()
