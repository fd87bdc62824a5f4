"""The store's pure parts: records and their encoding, the write-behind queue, and SQLite underneath."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import pykka
import pytest
from hypothesis import given
from hypothesis import strategies as st
from record_support import session_record

from mcp_troupe.actors.core.records import (
    RECORD_VERSION,
    RecordError,
    decode_record,
    encode_record,
    read_rows,
    to_rows,
)
from mcp_troupe.actors.core.write_behind import WriteBehind
from mcp_troupe.actors.shells.store_writer import StoreWriter
from mcp_troupe.actors.shells.supervisor import TICK, ChildContext
from mcp_troupe.transport.store.sqlite import SqliteStore

record = session_record


def test_a_record_round_trips_and_never_holds_the_token() -> None:
    rec = record()
    body = encode_record(rec)
    assert decode_record("s1", RECORD_VERSION, body) == rec
    assert b"secret" not in body


@given(st.binary(max_size=200))
def test_any_bytes_either_decode_to_a_record_or_raise_record_error(body: bytes) -> None:
    try:
        decode_record("s1", RECORD_VERSION, body)
    except RecordError:
        pass


@pytest.mark.parametrize(
    ("sid", "version", "body", "why"),
    [
        ("s1", RECORD_VERSION + 1, encode_record(record()), "record format"),
        ("s1", RECORD_VERSION, b"{nope", "not JSON"),
        ("s1", RECORD_VERSION, b"[]", "wrong fields"),
        ("s1", RECORD_VERSION, b"\xff\xfe", "not JSON"),
        ("other", RECORD_VERSION, encode_record(record()), "not the key"),
        ("s1", RECORD_VERSION, b" " * (1024 * 1024 + 1), "over"),
    ],
)
def test_a_bad_record_says_why(sid: str, version: int, body: bytes, why: str) -> None:
    with pytest.raises(RecordError, match=why):
        decode_record(sid, version, body)


@pytest.mark.parametrize(
    ("field", "value"),
    [("pid", "1234"), ("pid", True), ("restarts", 1.5), ("env_names", ["A", 3]), ("initialize", []), ("sid", None)],
)
def test_a_field_of_the_wrong_type_is_refused(field: str, value: object) -> None:
    data = json.loads(encode_record(record()))
    data[field] = value
    with pytest.raises(RecordError):
        decode_record("s1", RECORD_VERSION, json.dumps(data).encode())


def test_read_rows_keeps_the_good_and_names_the_bad() -> None:
    good = record("good")
    records, skipped = read_rows([("good", RECORD_VERSION, encode_record(good)), ("bad", 99, b"{}")])
    assert records == [good]
    assert [(sid, version) for sid, version, _ in skipped] == [("bad", 99)]


def test_the_queue_keeps_the_latest_change_per_session_in_first_change_order() -> None:
    queue = WriteBehind(limit=10)
    a1, b1, a2 = record("a"), record("b"), record("a", pid=2)
    queue.put("a", a1)
    queue.put("b", b1)
    queue.put("a", a2)
    queue.put("b", None)
    assert len(queue) == 2
    assert queue.take(1) == [("a", a2)]
    assert queue.take(10) == [("b", None)]
    assert queue.take(10) == [] and queue.written == 2


def test_a_full_queue_refuses_new_sessions_counts_them_and_still_takes_changes_of_waiting_ones() -> None:
    queue = WriteBehind(limit=2)
    assert queue.put("a", record("a")) and queue.put("b", record("b"))
    assert not queue.put("c", record("c"))
    assert queue.put("a", None)
    assert queue.dropped == 1 and len(queue) == 2


def test_requeue_gives_back_a_batch_without_overwriting_a_newer_change() -> None:
    queue = WriteBehind(limit=10)
    queue.put("a", record("a"))
    queue.put("b", record("b"))
    batch = queue.take(10)
    queue.put("a", None)
    queue.requeue(batch)
    assert dict(queue.take(10)) == {"a": None, "b": record("b")}
    assert queue.written == 2


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.booleans()), max_size=60), st.integers(1, 4))
def test_the_queue_ends_with_the_last_change_of_every_session_it_took(ops: list[tuple[str, bool]], most: int) -> None:
    queue, applied, last = WriteBehind(limit=100), {}, {}
    for sid, delete in ops:
        rec = None if delete else record(sid)
        queue.put(sid, rec)
        last[sid] = rec
        for got_sid, got in queue.take(most):
            applied[got_sid] = got
    for got_sid, got in queue.take(1000):
        applied[got_sid] = got
    assert applied == last


def test_sqlite_store_writes_deletes_and_loads_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "state" / "sessions.sqlite3"
    store = SqliteStore(path)
    store.write(to_rows([("a", record("a")), ("b", record("b"))]))
    store.write(to_rows([("a", None), ("b", record("b", pid=7))]))
    records, skipped = read_rows(store.load())
    store.close()
    assert records == [record("b", pid=7)] and skipped == []
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_sqlite_store_reads_rows_of_the_wrong_types_as_unusable(tmp_path: Path) -> None:
    path = tmp_path / "sessions.sqlite3"
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO sessions VALUES (?, ?, ?)", ("x", "one", "text body"))
    store = SqliteStore(path)
    records, skipped = read_rows(store.load())
    store.close()
    assert records == [] and len(skipped) == 1


class _Nobody(pykka.ThreadingActor):
    use_daemon_thread = True

    def on_receive(self, message: object) -> None:
        pass


class _FlakyStore(SqliteStore):
    """A real SQLite store whose first ``failures`` writes fail as a full disk would."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures

    def write(self, batch: Iterable[tuple[str, int, bytes | None]]) -> None:
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database or disk is full")
        super().write(batch)


def test_the_store_writer_writes_in_batches_and_keeps_a_batch_the_store_refused(tmp_path: Path) -> None:
    path = tmp_path / "sessions.sqlite3"
    queue = WriteBehind(limit=100)
    for n in range(5):
        queue.put(f"s{n}", record(f"s{n}"))
    errors: list[str] = []
    nobody = _Nobody.start()
    writer = StoreWriter.start(
        ChildContext(nobody, "store", 1),
        lambda: _FlakyStore(path, 1),
        lambda: queue.take(2),
        queue.requeue,
        errors.append,
    )
    try:
        writer.ask(TICK)  # the first batch fails: it goes back, nothing is lost
        assert len(queue) == 5 and len(errors) == 1 and "disk is full" in errors[0]
        writer.ask(TICK)
        assert len(queue) == 0 and writer.proxy().batches.get() == 3
    finally:
        writer.stop()
        nobody.stop()
    check = SqliteStore(path)
    records, _ = read_rows(check.load())
    check.close()
    assert sorted(r.sid for r in records) == [f"s{n}" for n in range(5)]
