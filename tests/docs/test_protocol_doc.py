"""docs/protocol.rst, docs/sessions.rst and docs/control.rst must not fall behind the code they describe.

The three pages are read as one text, in that order, and parsed as plain text (docutils is not a dependency), relying on
its conventions: sections are underlined with ``=``, subsections with ``-``,
frame sections with ``~``; a frame section's heading starts with the frame
type in double back-quotes; its field table is a ``list-table`` whose rows
start with ``* - ``field```` followed by the msgpack type and ``yes``/``no``
(a frame type without fields has no table, and says that it has "no fields
besides ``v`` and ``t``").
Each check compares sets both ways, so a frame type, field or error code added
to the code without the doc (or left in the doc after leaving the code) fails.
The JSON-RPC error codes are found in transport/wire/jsonrpc.py (its constants in
-32768..-32000); a code the daemon writes (one that actors/ uses, or one marked
``troupe:``) needs a subsection under "JSON-RPC errors from the daemon" and a
row in its summary table, the others must be listed as coming from the server.
The adapter-side behaviour (heartbeats, reconnects by ``adapter_id``, the
``close`` for an unknown session) and the server-restart contract (the replayed
``initialize``, what the client is sent) are driven through the real `Dispatcher`
and `SessionCore`, and the strings a peer sees must be the documented ones.
"""

from __future__ import annotations

import ast
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest

from mcp_troupe.actors.core.options import ServerPolicy
from mcp_troupe.actors.core.outputs import RespawnServer, ToClient, ToServer
from mcp_troupe.actors.core.session import SessionCore
from mcp_troupe.actors.core.supervision import ChildSpec
from mcp_troupe.actors.daemon.config import DaemonConfig, ServerConfig
from mcp_troupe.actors.daemon.dispatcher import Dispatcher, DispatcherOptions
from mcp_troupe.actors.shells.supervisor import Status, SupervisedActor, Supervisor
from mcp_troupe.transport.hub.loop import BACK, HubOptions, HubStats
from mcp_troupe.transport.hub.peers import Connection
from mcp_troupe.transport.keys import ANY_SERVER, OPERATOR
from mcp_troupe.transport.runtime import BACK_SOCKET, EVENTS_SOCKET, FRONT_SOCKET
from mcp_troupe.transport.wire import frames, jsonrpc
from mcp_troupe.transport.wire.frames import ErrorCode

ROOT = Path(__file__).resolve().parents[2]
DOCS = tuple(ROOT / "docs" / name for name in ("protocol.rst", "sessions.rst", "control.rst"))
"""The wire protocol, the session rules and the control operations: one specification on three pages."""


def doc_text() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in DOCS)


DIRECTIONS = {
    "Client to daemon": frames.CLIENT_TO_DAEMON,
    "Daemon to client": frames.DAEMON_TO_CLIENT,
    "Adapter to daemon": frames.ADAPTER_TO_DAEMON,
    "Daemon to adapter": frames.DAEMON_TO_ADAPTER,
}

KIND_WORDS = {
    "string": "str",
    "integer": "int",
    "boolean": "bool",
    "map": "map",
    "integer or string": "int or str",
}
"""How the doc's "msgpack type" column names each field kind (by its name) of transport/wire/frames.py."""

LEVELS = {"=": 1, "-": 2, "~": 3}
_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+])\1*$")
_ROW = re.compile(r"^\s*\* - ``([^`]+)``\s*$")
_CELL = re.compile(r"^\s*- (.*?)\s*$")
_LITERAL = re.compile(r"``([^`]+)``")


@dataclass
class Section:
    title: str
    level: int
    start: int
    end: int
    lines: list[str]

    def children(self, sections: list[Section]) -> list[Section]:
        return [s for s in sections if s.level == self.level + 1 and self.start < s.start < self.end]


def parse_sections(text: str) -> list[Section]:
    """Every underlined section (the overlined page title is skipped), with its body."""
    lines = text.splitlines()
    heads: list[tuple[int, str, int]] = []
    for i in range(len(lines) - 1):
        title, under = lines[i], lines[i + 1]
        if not title.strip() or title[0].isspace() or not _ADORNMENT.match(under) or len(under) < len(title):
            continue
        if i > 0 and lines[i - 1] == under:  # overline + underline: the page title
            continue
        if under[0] not in LEVELS:
            raise AssertionError(f"line {i + 2}: unexpected section adornment {under[0]!r}; use = - ~")
        heads.append((i, title.strip(), LEVELS[under[0]]))
    sections = []
    for n, (start, title, level) in enumerate(heads):
        end = next((s for s, _, lv in heads[n + 1 :] if lv <= level), len(lines))
        sections.append(Section(title, level, start, end, lines[start + 2 : end]))
    return sections


def table_rows(lines: list[str]) -> dict[str, list[str]]:
    """Body rows of the first list-table in ``lines`` whose first cell is a literal: name -> the other cells."""
    starts = [i for i, line in enumerate(lines) if line.strip().startswith(".. list-table::")]
    assert starts, "no list-table in this section"
    table = lines[starts[0] + 1 : starts[1] if len(starts) > 1 else len(lines)]
    header = next((int(m.group(1)) for line in table if (m := re.match(r"^\s*:header-rows:\s*(\d+)", line))), 0)
    rows: dict[str, list[str]] = {}
    seen = 0
    for i, line in enumerate(table):
        if not line.lstrip().startswith("* - "):
            continue
        seen += 1
        match = _ROW.match(line)
        if seen <= header or not match:
            continue
        cells = []
        for follow in table[i + 1 :]:
            if follow.lstrip().startswith("* - "):
                break
            if cell := _CELL.match(follow):
                cells.append(cell.group(1).strip())
        assert match.group(1) not in rows, f"row ``{match.group(1)}`` appears twice in one table"
        rows[match.group(1)] = cells
    return rows


@pytest.fixture(scope="module")
def sections() -> list[Section]:
    return parse_sections(doc_text())


def find(sections: list[Section], title: str, level: int) -> Section:
    found = [s for s in sections if s.title == title and s.level == level]
    assert len(found) == 1, (
        f"docs/{{protocol,sessions,control}}.rst need one section {title!r} at level {level}, found {len(found)}"
    )
    return found[0]


def frame_sections(sections: list[Section], direction: str) -> dict[str, Section]:
    frames_section = find(sections, "Frames", 1)
    direction_section = next((s for s in frames_section.children(sections) if s.title == direction), None)
    assert direction_section is not None, f"no subsection {direction!r} under 'Frames'"
    out = {}
    for child in direction_section.children(sections):
        match = _LITERAL.match(child.title)
        assert match, f"frame heading {child.title!r} must start with the frame type in ``double back-quotes``"
        out[match.group(1)] = child
    return out


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_each_direction_documents_exactly_its_frame_types(sections: list[Section], direction: str) -> None:
    documented = set(frame_sections(sections, direction))
    in_code = set(DIRECTIONS[direction])
    assert documented == in_code, (
        f"{direction}: undocumented frame types {sorted(in_code - documented)}, "
        f"documented but not in transport/wire/frames.py {sorted(documented - in_code)}"
    )


@pytest.mark.parametrize(
    ("direction", "frame_type"),
    [(d, t) for d, table in DIRECTIONS.items() for t in table],
)
def test_each_frame_table_matches_its_schema(sections: list[Section], direction: str, frame_type: str) -> None:
    section = frame_sections(sections, direction).get(frame_type)
    assert section is not None, f"{direction}: no section for frame type {frame_type!r}"
    schema = DIRECTIONS[direction][frame_type]
    if not schema:
        text = " ".join("\n".join(section.lines).split())
        assert "no fields besides ``v`` and ``t``" in text, f"{direction} {frame_type!r}: say it has no fields"
        assert not any(line.strip().startswith(".. list-table::") for line in section.lines), (
            f"{direction} {frame_type!r} has no fields in transport/wire/frames.py, but a table in the doc"
        )
        return
    rows = table_rows(section.lines)
    expected = {}
    for name, (kind, required) in schema.items():
        assert kind.name in KIND_WORDS, f"field kind {kind.name!r} is new: name it in KIND_WORDS and in the doc"
        expected[name] = [KIND_WORDS[kind.name], "yes" if required else "no"]
    documented = {name: cells[:2] for name, cells in rows.items()}
    assert documented == expected, f"{direction} {frame_type!r}: doc table {documented} != schema {expected}"


def test_every_error_code_is_documented(sections: list[Section]) -> None:
    codes = set(table_rows(find(sections, "Error codes", 2).lines))
    in_code = {str(code) for code in ErrorCode}
    assert codes == in_code, f"undocumented codes {sorted(in_code - codes)}, stale codes {sorted(codes - in_code)}"


def test_the_envelope_version_is_the_code_version(sections: list[Section]) -> None:
    envelope = "\n".join(find(sections, "Envelope", 1).lines)
    assert f"describes version ``{frames.VERSION}``" in envelope
    spoken = sorted(frames.SUPPORTED_VERSIONS)
    assert spoken == [frames.VERSION], f"the doc says only v={frames.VERSION} is spoken, the code speaks {spoken}"


@dataclass(frozen=True)
class Code:
    name: str
    value: int
    doc: str


def jsonrpc_codes() -> dict[str, Code]:
    """Every JSON-RPC error-code constant of wire/jsonrpc.py (an int in -32768..-32000), with its docstring."""
    body = ast.parse(Path(jsonrpc.__file__).read_text(encoding="utf-8")).body
    codes = {}
    for node, after in zip(body, [*body[1:], None], strict=True):
        if not isinstance(node, ast.AnnAssign | ast.Assign):
            continue
        target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
        value = getattr(jsonrpc, target.id, None) if isinstance(target, ast.Name) else None
        if not isinstance(value, int) or isinstance(value, bool) or not -32768 <= value <= -32000:
            continue
        doc = after.value.value if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) else ""
        codes[target.id] = Code(target.id, value, str(doc))
    assert codes, "found no JSON-RPC error-code constants in transport/wire/jsonrpc.py; update this test"
    return codes


def daemon_codes() -> set[str]:
    """Names of the codes the daemon writes: those the daemon's code (actors/) uses, and those marked ``troupe:``."""
    codes = jsonrpc_codes()
    used = set()
    for source in (ROOT / "actors").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "jsonrpc":
                used.add(node.attr)
            elif isinstance(node, ast.ImportFrom) and node.module == "mcp_troupe.transport.wire.jsonrpc":
                used.update(alias.name for alias in node.names)
    return {name for name, code in codes.items() if name in used or code.doc.startswith("troupe:")}


def jsonrpc_sections(sections: list[Section]) -> dict[int, Section]:
    """The subsections of 'JSON-RPC errors from the daemon', by the code their title starts with."""
    out = {}
    for child in find(sections, "JSON-RPC errors from the daemon", 1).children(sections):
        match = re.match(r"^``(-?\d+)``", child.title)
        assert match, f"subsection {child.title!r} must start with its JSON-RPC code in ``double back-quotes``"
        out[int(match.group(1))] = child
    return out


def test_every_jsonrpc_code_the_daemon_writes_has_a_subsection(sections: list[Section]) -> None:
    codes = jsonrpc_codes()
    written = {codes[name].value for name in daemon_codes()}
    documented = set(jsonrpc_sections(sections))
    assert documented == written, (
        f"codes the daemon writes without a subsection {sorted(written - documented)}, "
        f"subsections for codes it does not write {sorted(documented - written)}"
    )


def test_the_summary_table_lists_every_jsonrpc_code_the_daemon_writes(sections: list[Section]) -> None:
    codes = jsonrpc_codes()
    rows = table_rows(find(sections, "JSON-RPC errors from the daemon", 1).lines)
    written = {str(codes[name].value) for name in daemon_codes()}
    assert set(rows) == written, f"the summary table lists {sorted(rows)}, the daemon writes {sorted(written)}"


def test_the_other_jsonrpc_codes_are_said_to_come_from_the_server(sections: list[Section]) -> None:
    text = "\n".join(find(sections, "JSON-RPC errors from the daemon", 1).lines)
    match = re.search(r"^Other JSON-RPC codes (.*?)(?:\n\n|\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, "the paragraph 'Other JSON-RPC codes (...) are never produced by the daemon' is gone"
    listed = {int(v) for v in re.findall(r"``(-?\d+)``", match.group(1))}
    codes, written = jsonrpc_codes(), daemon_codes()
    others = {code.value for name, code in codes.items() if name not in written}
    assert listed == others, f"the paragraph lists {sorted(listed)}, the daemon never writes {sorted(others)}"


def test_each_jsonrpc_subsection_shows_the_data_its_constant_promises(sections: list[Section]) -> None:
    by_value = jsonrpc_sections(sections)
    codes = jsonrpc_codes()
    for name in sorted(daemon_codes()):
        promised = re.search(r"``data: \{([^}]*)\}``", codes[name].doc)
        if promised is None:
            continue
        body = "\n".join(by_value[codes[name].value].lines)
        missing = [key.strip() for key in promised.group(1).split(",") if f'"{key.strip()}"' not in body]
        assert not missing, f"the ``{codes[name].value}`` subsection shows no data key(s) {missing}"


def local_connection(which: int, _peer: bytes) -> Connection:
    """A connection as the hub describes a local (ipc) peer of the daemon's own user: every right."""
    return Connection(1, rights=frozenset({ANY_SERVER}) if which == BACK else frozenset({OPERATOR}))


class _Outbox:
    """Stands in for the hub, with the test's thread as its loop: keeps the frames for the client,
    queues calls (and so the session actors' messages) until `run`, counts no traffic."""

    def __init__(self) -> None:
        self.front: list[bytes] = []
        self.soon: deque[Callable[[], object]] = deque()
        self.ident = threading.get_ident()

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self.ident

    def run(self) -> None:
        while self.soon:
            self.soon.popleft()()

    def send_front(self, peer: bytes, data: bytes) -> None:
        self.front.append(data)

    def send_back(self, peer: bytes, data: bytes) -> None:
        pass  # the session's spawn, and its close after sessions.close or sessions.cleanup

    def call(self, fn: Callable[[], object]) -> None:
        self.soon.append(fn)  # deque.append is atomic: the supervisor's thread may call too

    def stats_now(self) -> HubStats:
        return HubStats()

    def connection(self, which: int, peer: bytes) -> Connection:
        return local_connection(which, peer)

    def answers(self) -> list[dict[str, Any]]:
        decoded = [frames.decode(data, frames.DAEMON_TO_CLIENT) for data in list(self.front)]
        return [frame for frame in decoded if frame["t"] == "ctl"]


SID = "<sid>"
"""Stands for the id of the one session `_ctl` opens before it runs the op."""

CTL_ARGS: dict[str, dict[str, Any]] = {
    "inject_fault": {"target": "janitor"},
    "sessions.show": {"sid": SID},
    "sessions.logs": {"sid": SID},
    "sessions.close": {"sid": SID},
    "sessions.cleanup": {"older_than_s": 0},
    "http.report": {"counts": {"http:POST": 1}},
}
"""Arguments that make each control op succeed (the others take none)."""


class _Idle(SupervisedActor):
    """A supervised child that does nothing, so a real `Supervisor` has something to report."""


@pytest.fixture(scope="module")
def supervisor() -> Iterator[Callable[[object], None]]:
    """Tells a real supervisor the ``status`` questions; drops what would change it (fault injection)."""
    ref = Supervisor.start([(ChildSpec("janitor"), _Idle.start)])
    try:
        yield lambda message: ref.tell(message) if isinstance(message, Status) else None
    finally:
        ref.stop()


def _ctl(op: str, args: dict[str, Any] | None = None, supervisor: Callable[[object], None] | None = None) -> dict:
    """Run one control op on a real dispatcher that holds one session (opening, on a registered adapter)."""
    outbox = _Outbox()
    options = DispatcherOptions(fault_injection=True)
    dispatcher = Dispatcher(outbox, options, supervisor=supervisor or (lambda _m: None), version="test")  # type: ignore[arg-type]
    dispatcher.reload_keys = lambda done: done({"clients": 0, "operators": 0, "adapters": 0})  # a daemon with keys
    dispatcher.on_back(b"adapter", frames.encode("register", server="example", capacity=0))
    dispatcher.on_front(b"peer", frames.encode("open", ref=0, server="example"))
    outbox.run()
    [sid] = dispatcher.sessions
    try:
        args = {key: sid if value == SID else value for key, value in args.items()} if args else args
        dispatcher.on_front(b"peer", frames.encode("ctl", ref=1, op=op, args=args))
        deadline = time.monotonic() + 10
        outbox.run()
        while not outbox.answers() and time.monotonic() < deadline:  # some ops are answered from another thread
            time.sleep(0.01)
            outbox.run()
        answers = outbox.answers()
        assert len(answers) == 1, f"control op {op!r} got {len(answers)} answers"
        return answers[0]
    finally:
        for actor in dispatcher.actors():
            actor.stop(block=False)
        outbox.run()


def control_op_sections(sections: list[Section]) -> dict[str, Section]:
    children = find(sections, "Control operations", 1).children(sections)
    return {m.group(1): s for s in children if (m := _LITERAL.match(s.title))}


def list_tables(lines: list[str]) -> list[dict[str, list[str]]]:
    """Every list-table in ``lines``, parsed like `table_rows`."""
    starts = [i for i, line in enumerate(lines) if line.strip().startswith(".. list-table::")]
    return [table_rows(lines[start:]) for start in starts]


def test_control_ops_are_the_documented_ones(sections: list[Section], supervisor: Callable[[object], None]) -> None:
    documented = set(control_op_sections(sections))
    assert documented, "no control op is documented"
    for op in documented:
        answer = _ctl(op, CTL_ARGS.get(op), supervisor)
        assert answer["ok"] is True, f"documented control op {op!r} is refused by the dispatcher: {answer}"
    known = re.search(r"known: (\[.*\])", _ctl("no-such-op")["error"]["message"])
    assert known, "the unknown_op message no longer lists the known ops; update this test"
    assert set(ast.literal_eval(known.group(1))) == documented


def test_health_result_fields_are_documented(sections: list[Section]) -> None:
    documented = set(table_rows(control_op_sections(sections)["health"].lines))
    result = _ctl("health")["result"]
    assert documented == set(result), f"health returns {sorted(result)}, the doc lists {sorted(documented)}"


def test_status_result_fields_are_documented(sections: list[Section], supervisor: Callable[[object], None]) -> None:
    tables = list_tables(control_op_sections(sections)["status"].lines)
    assert len(tables) == 3, "the status section needs three tables: the result, the supervisor, one child"
    result = _ctl("status", None, supervisor)["result"]
    tree = result["supervisor"]
    for documented, actual, what in (
        (tables[0], result, "the result"),
        (tables[1], tree, "the supervisor map"),
        (tables[2], tree["children"][0], "a child"),
    ):
        assert set(documented) == set(actual), f"{what} has {sorted(actual)}, the doc lists {sorted(documented)}"


def test_stats_result_fields_are_documented(sections: list[Section]) -> None:
    section = control_op_sections(sections)["stats"]
    rows, text = table_rows(section.lines), "\n".join(section.lines)
    result = _ctl("stats")["result"]
    assert set(rows) == set(result), f"stats returns {sorted(result)}, the doc lists {sorted(rows)}"
    for name in ("sessions", "requests", "frames"):  # maps with fixed keys: each key is named
        unnamed = [key for key in result[name] if f"``{key}``" not in text]
        assert not unnamed, f"stats {name}: the doc does not name {unnamed}"


def test_session_snapshots_are_documented(sections: list[Section]) -> None:
    ops = control_op_sections(sections)
    listed = _ctl("sessions.list")["result"]
    assert set(table_rows(ops["sessions.list"].lines)) == set(listed), f"sessions.list returns {sorted(listed)}"
    [snapshot] = listed["sessions"]
    shown = _ctl("sessions.show", {"sid": SID})["result"]
    assert set(shown) == {"session"}, f"sessions.show returns {sorted(shown)}"
    tables = list_tables(ops["sessions.show"].lines)
    assert len(tables) == 1, "the sessions.show section needs one table: the session snapshot"
    for actual in (snapshot, shown["session"]):
        assert set(tables[0]) == set(actual), f"a snapshot has {sorted(actual)}, the doc lists {sorted(tables[0])}"


def test_defaults_quoted_in_the_doc_are_current() -> None:
    text = doc_text()
    assert DispatcherOptions().max_frame_bytes == DaemonConfig.max_frame_bytes, "two defaults for max_frame_bytes"
    quoted = [
        f"default {DaemonConfig.max_frame_bytes}",
        f"``ipc://<runtime dir>/{FRONT_SOCKET}``",
        f"``ipc://<runtime dir>/{BACK_SOCKET}``",
        f"``ipc://<runtime dir>/{EVENTS_SOCKET}``",
        f"     - {HubOptions().sndhwm}\n",
        f"     - {HubOptions().rcvhwm}\n",
        f"``heartbeat_ms`` (default {DaemonConfig.heartbeat_ms} ms)",
    ]
    missing = [q.strip() for q in quoted if q not in text]
    assert not missing, f"docs/protocol.rst no longer quotes the current defaults: {missing}"
    flat = " ".join(text.split())
    options, server = DispatcherOptions(), ServerConfig("x", ("x",))
    assert options.adapter_timeout == DaemonConfig.adapter_timeout, "two defaults for adapter_timeout"
    assert options.respawn_timeout == DaemonConfig.respawn_timeout, "two defaults for respawn_timeout"
    assert (ServerPolicy().on_exit, ServerPolicy().max_restarts) == (server.on_exit, server.max_restarts)
    quoted = [
        f"``adapter_timeout`` seconds (default {DaemonConfig.adapter_timeout:g};",
        f"``adapter_timeout`` (default {DaemonConfig.adapter_timeout:g} s)",
        f"``respawn_timeout`` seconds (default {DaemonConfig.respawn_timeout:g})",
        f"``max_restarts`` times (default {server.max_restarts})",
        f'``on_exit = "{server.on_exit}"``, the default',
    ]
    missing = [q for q in quoted if q not in flat]
    assert not missing, f"docs/protocol.rst no longer quotes the current defaults: {missing}"


def test_the_worked_example_bytes_are_right() -> None:
    text = doc_text()
    data = frames.encode("open", ref=1, server="example")
    assert f"{len(data)} bytes of msgpack" in text
    assert msgpack.unpackb(data) == {"v": 1, "t": "open", "ref": 1, "server": "example"}
    table = re.findall(r"^   \* - ``((?:[0-9a-f]{2} ?)+)``$", text, re.MULTILINE)
    assert bytes.fromhex("".join(table)) == data


class _BackOutbox:
    """Records what the dispatcher sends to adapters."""

    def __init__(self) -> None:
        self.back: list[tuple[bytes, dict[str, Any]]] = []

    def send_front(self, peer: bytes, data: bytes) -> None:
        raise AssertionError("nothing here concerns a client")

    def send_back(self, peer: bytes, data: bytes) -> None:
        self.back.append((peer, frames.decode(data, frames.DAEMON_TO_ADAPTER)))

    def sent(self) -> list[tuple[bytes, dict[str, Any]]]:
        sent, self.back = self.back, []
        return sent

    def connection(self, which: int, peer: bytes) -> Connection:
        return local_connection(which, peer)


def test_adapter_frames_are_answered_as_documented(sections: list[Section]) -> None:
    outbox = _BackOutbox()
    dispatcher = Dispatcher(outbox, DispatcherOptions())  # type: ignore[arg-type]
    heartbeat = frames.encode("heartbeat")

    dispatcher.on_back(b"a1", heartbeat)
    [(_, refused)] = outbox.sent()
    assert (refused["t"], refused["code"]) == ("error", ErrorCode.NOT_REGISTERED), "heartbeat before register"

    register = frames.encode("register", server="example", capacity=0, pid=4242, adapter_id="3f9c0a7e51d2b864")
    dispatcher.on_back(b"a1", register)
    assert [f["t"] for _, f in outbox.sent()] == ["registered"]
    dispatcher.on_back(b"a1", heartbeat)
    assert outbox.sent() == [], "the daemon does not answer a heartbeat"

    dispatcher.on_back(b"a2", register)  # the same adapter, reconnected under a new routing id
    assert [f["t"] for _, f in outbox.sent()] == ["registered"]
    assert list(dispatcher.adapters) == [b"a2"], "a reconnect with the same adapter_id moves the registration"

    dispatcher.on_back(b"a2", frames.encode("exited", sid="gone", code=0, reason="stopped"))
    assert outbox.sent() == [], "an exited for an unknown session is ignored"
    for late in (
        frames.encode("mcp", sid="gone", msg={"jsonrpc": "2.0", "method": "x"}),
        frames.encode("spawned", sid="gone", pid=1),
    ):
        dispatcher.on_back(b"a2", late)
        [(peer, close)] = outbox.sent()
        assert (peer, close["t"], close["sid"]) == (b"a2", "close", "gone")
        documented = "\n".join(frame_sections(sections, "Daemon to adapter")["close"].lines)
        assert f'``"{close["reason"]}"``' in documented, f"close reason {close['reason']!r} is not documented"
        adapter_mcp = " ".join("\n".join(frame_sections(sections, "Adapter to daemon")["mcp"].lines).split())
        assert f'reason: "{close["reason"]}"' in adapter_mcp

    dispatcher._watch_adapters(time.monotonic() + DaemonConfig.adapter_timeout + 1)  # a silent adapter is lost
    assert dispatcher.adapters == {}


def _legacy_session(policy: ServerPolicy) -> SessionCore:
    core = SessionCore("S", "example", 0.0, policy=policy)
    core.server_started(9090, 0.0)
    params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    core.receive_from_client(jsonrpc.request(1, "initialize", params), 0.1)
    core.receive_from_server(
        {"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2025-11-25", "capabilities": {}}}, 0.2
    )
    core.receive_from_client(jsonrpc.notification("notifications/initialized"), 0.3)
    return core


def test_server_restarts_behave_as_documented(sections: list[Section]) -> None:
    text = " ".join(doc_text().split())
    core = _legacy_session(ServerPolicy("restart", 1))
    core.receive_from_client(jsonrpc.request(20, "tools/call", {"name": "sleep"}), 1.0)
    core.receive_from_server(jsonrpc.request("s7", "roots/list"), 1.1)

    exited = core.server_exited(1, "exited with code 1", 2.0)
    answers = [o.msg for o in exited if isinstance(o, ToClient)]
    assert [m.get("id") for m in answers] == [20, None] and any(isinstance(o, RespawnServer) for o in exited)
    error, cancel = answers[0]["error"], answers[1]
    assert error["code"] == jsonrpc.CONNECTION_CLOSED
    assert error["data"] == {
        "reason": "server_restarted",
        "method": "tools/call",
        "exit_code": 1,
        "detail": "exited with code 1",
    }
    assert f'"{error["message"].replace("exited with code 1", "<detail>")}"' in text
    assert (
        f'``{{"reason": "{error["data"]["reason"]}", "exit_code": int or null, "detail": str, "method": str}}``' in text
    )
    assert cancel["method"] == "notifications/cancelled" and cancel["params"]["requestId"] == "s7"
    assert f'``"{cancel["params"]["reason"]}"``' in text

    assert core.receive_from_client(jsonrpc.request(21, "tools/list"), 2.1) == [], "held until the new process is up"
    [replay] = [o.msg for o in core.server_started(9100, 2.5) if isinstance(o, ToServer)]
    assert replay["method"] == "initialize" and replay["params"]["clientInfo"] == {"name": "t", "version": "1"}
    assert replay["id"] == f"troupe-replay-{core.restarts}" == "troupe-replay-1"
    assert '``"troupe-replay-N"``' in text
    after = core.receive_from_server({"jsonrpc": "2.0", "id": replay["id"], "result": {}}, 2.6)
    assert not any(isinstance(o, ToClient) for o in after), "the replayed initialize's response is not forwarded"
    assert [o.msg.get("method") for o in after if isinstance(o, ToServer)] == [
        "notifications/initialized",
        "tools/list",
    ]

    final = core.server_exited(2, "exited with code 2", 3.0)  # max_restarts = 1: this one ends the session
    assert any(getattr(o, "reason", None) == "server_exited" for o in final)
