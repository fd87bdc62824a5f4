"""`SessionRecord`: what the session store keeps of one session, and its versioned encoding (pure).

A record is written as JSON text beside its format version (`RECORD_VERSION`). Reading one back
checks the version and every field's type before anything is built from it: a record that is
corrupt, or written by another version of troupe, raises `RecordError` and is skipped by whoever
loads the store, never trusted. The resume token is never stored, only its SHA-256; a client's
``env`` values (secrets, often) are never stored either.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any, Final, Protocol

RECORD_VERSION: Final = 1
"""The format of `SessionRecord` as stored; a record of another version is skipped with a warning."""

MAX_RECORD_BYTES: Final = 1024 * 1024
"""A stored record larger than this is refused on reading as corrupt (a record is a few KB)."""


class RecordError(ValueError):
    """A stored record that cannot be used: its text, its version or one of its fields."""


@dataclass(frozen=True, slots=True)
class SessionRecord:
    sid: str
    server: str
    state: str
    """`mcp_troupe.actors.core.state.State` value when it was written."""
    era: str
    protocol_version: str | None
    initialize: dict[str, Any] | None
    """The legacy ``initialize`` request as the client sent it (replayed to a new server process)."""
    client_info: dict[str, Any] | None
    client_capabilities: dict[str, Any] | None
    server_info: dict[str, Any] | None
    server_capabilities: dict[str, Any] | None
    pid: int | None
    adapter_id: str | None
    token_sha256: str
    owner_key: str
    """Hex of the CurveZMQ public key that opened it; empty without CurveZMQ."""
    client_label: str
    env_names: tuple[str, ...]
    """Names (never values) of the environment variables the client brought."""
    created_at: float
    """Wall-clock time (seconds since the epoch) the session was opened."""
    restarts: int = 0


def token_digest(token: bytes) -> str:
    return hashlib.sha256(token).hexdigest()


_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "sid": (str,),
    "server": (str,),
    "state": (str,),
    "era": (str,),
    "protocol_version": (str, type(None)),
    "initialize": (dict, type(None)),
    "client_info": (dict, type(None)),
    "client_capabilities": (dict, type(None)),
    "server_info": (dict, type(None)),
    "server_capabilities": (dict, type(None)),
    "pid": (int, type(None)),
    "adapter_id": (str, type(None)),
    "token_sha256": (str,),
    "owner_key": (str,),
    "client_label": (str,),
    "env_names": (list,),
    "created_at": (int, float),
    "restarts": (int,),
}
assert set(_TYPES) == {f.name for f in fields(SessionRecord)}


def encode_record(record: SessionRecord) -> bytes:
    return json.dumps(asdict(record), separators=(",", ":"), ensure_ascii=False).encode()


def decode_record(sid: str, version: int, body: bytes) -> SessionRecord:
    """The record stored under ``sid``; `RecordError` says why it cannot be used."""
    if version != RECORD_VERSION:
        raise RecordError(f"record format {version}, this troupe reads {RECORD_VERSION}")
    if len(body) > MAX_RECORD_BYTES:
        raise RecordError(f"record of {len(body)} bytes, over {MAX_RECORD_BYTES}")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or set(data) != set(_TYPES):
        raise RecordError("not a session record (wrong fields)")
    for name, types in _TYPES.items():
        value = data[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise RecordError(f"field {name!r} is {type(value).__name__}")
    if data["sid"] != sid:
        raise RecordError("its sid is not the key it was stored under")
    if not all(isinstance(name, str) for name in data["env_names"]):
        raise RecordError("field 'env_names' holds a non-string")
    data["env_names"] = tuple(data["env_names"])
    return SessionRecord(**data)


Write = tuple[str, SessionRecord | None]
"""One change for the store: the session's new record, or None (the session is gone: delete it)."""


class SessionStore(Protocol):
    """Where records live: the embedded SQLite file, or a networked store (Redis) for a cluster.

    Written by one owner (the store actor), in batches; read whole at start-up. Every method may
    raise `OSError` (or the store's own error) when the store cannot be reached."""

    def write(self, batch: Iterable[tuple[str, int, bytes | None]]) -> None:
        """Apply ``(sid, version, body)`` changes in one transaction; ``body`` None deletes."""
        ...

    def load(self) -> Iterator[tuple[str, int, bytes]]:
        """Every stored ``(sid, version, body)``, undecoded: decoding is `decode_record`'s."""
        ...

    def close(self) -> None: ...


def to_rows(batch: Iterable[Write]) -> list[tuple[str, int, bytes | None]]:
    return [(sid, RECORD_VERSION, None if record is None else encode_record(record)) for sid, record in batch]


def read_rows(rows: Iterable[tuple[str, int, bytes]]) -> tuple[list[SessionRecord], list[tuple[str, int, str]]]:
    """The usable records among stored rows, and ``(sid, version, why)`` for each one skipped."""
    records: list[SessionRecord] = []
    skipped: list[tuple[str, int, str]] = []
    for sid, version, body in rows:
        try:
            records.append(decode_record(sid, version, body))
        except RecordError as exc:
            skipped.append((sid, version, str(exc)))
    return records, skipped
