"""One MCP server subprocess speaking newline-delimited JSON-RPC on stdio.

Each `ServerProcess` runs two threads and shares nothing mutable with the
adapter loop that created it:

* the reader owns stdout: every JSON object line becomes ``("mcp", sid, msg, checked)``
  for the adapter, and at end of file it tells the writer; while the adapter
  has it paused (`set_reading`) it reads nothing, so a server that writes
  faster than its client reads blocks on its own full pipe, as it would
  talking to that client directly;
* the writer owns stdin and the process lifecycle (only it waits or signals):
  it writes the lines the adapter queues and, on a stop request or when the
  server closes stdout, runs the MCP stdio shutdown (close stdin, SIGTERM,
  SIGKILL) and reports ``("exited", sid, returncode, reason)``;
* the stderr thread owns stderr: each line goes to the log (logger
  ``troupe.server``), tagged with the session and pid and rate-limited, so a
  chatty or crash-looping server cannot flood the daemon's log.

The adapter loop talks to the writer only through the writer's queue.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import queue
import select
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, Final, Literal

from mcp_troupe.transport.wire import jsonrpc
from mcp_troupe.transport.wire.envelope import EnvelopeScan, envelope_of

log = logging.getLogger("troupe.adapter")
server_log = logging.getLogger("troupe.server")

MAX_LINE_BYTES: Final = 32 * 1024 * 1024
"""Longest stdout line taken from a server by default (the daemon's ``max_server_frame_bytes``)."""
MAX_LINE_CONTAINERS: Final = 1_000_000
"""Most JSON objects and arrays one line may hold by default (``max_server_frame_items``)."""
STDERR_LINES_PER_SECOND: Final = 20
"""Server stderr lines logged per second and session; the rest are counted and summarised."""

McpEvent = tuple[Literal["mcp"], str, dict[str, Any], bool]
"""``("mcp", sid, msg, checked)``: ``checked`` when ``msg`` is plain JSON by construction (see `plain_json_line`)."""
ExitedEvent = tuple[Literal["exited"], str, int | None, str]
StderrEvent = tuple[Literal["stderr"], str, str]
ProcessEvent = McpEvent | ExitedEvent | StderrEvent
STDERR_LINE_CHARS: Final = 2000
"""Longest stderr line kept (the rest of a longer one is cut)."""

_WRITABLE_POLL_MS: Final = 100
"""How often a writer blocked on a full stdin pipe looks for a stop request."""

_STDOUT_DRAIN_TIMEOUT: Final = 1.0
"""How long, after the exit, the writer waits for the reader to reach end of file.

This keeps a server's last output ahead of its ``exited`` event; the bound is for
a grandchild that inherited stdout and holds it open. The stderr reader gets as long.
"""


class SpawnError(RuntimeError):
    """The server command could not be started."""

    def __init__(self, command: Sequence[str], error: BaseException) -> None:
        super().__init__(f"cannot start {shlex.join(command)!r}: {error}")
        self.command = list(command)
        self.error = error


class _Marker(enum.Enum):
    STOP = "stop requested"
    EOF = "server closed its stdout"
    BROKEN_PIPE = "server closed its stdin"


_WriterItem = bytes | _Marker


class ServerProcess:
    """One server process for one session; its methods belong to the adapter loop thread."""

    def __init__(
        self,
        sid: str,
        command: Sequence[str],
        report: Callable[[ProcessEvent], object],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stop_timeout: float = 2.0,
        term_timeout: float = 2.0,
        max_line: int = MAX_LINE_BYTES,
        max_containers: int = MAX_LINE_CONTAINERS,
    ) -> None:
        """Start the process and its threads; raise `SpawnError` if it cannot start.

        A stdout line over ``max_line`` bytes, or holding more than ``max_containers`` JSON objects and
        arrays, is not forwarded: if it names a request id it is answered (`refusal_for`), else logged.

        ``env`` replaces the environment as in `subprocess.Popen` (None inherits).
        ``report`` must be safe to call from any thread (e.g. `Mailbox.put`).
        """
        self.sid = sid
        self._report = report
        self._stop_timeout = stop_timeout
        self._term_timeout = term_timeout
        self._max_line = max_line
        self._max_containers = max_containers
        self._inbox: queue.SimpleQueue[_WriterItem] = queue.SimpleQueue()
        self._backlog: deque[bytes] = deque()
        self._stop_queued = False
        self._may_read = threading.Event()
        """Set while the reader may read stdout (a one-way signal from the adapter loop, not shared state)."""
        self._may_read.set()
        self._proc = _spawn(command, env, cwd)
        self._stdin: IO[bytes] = self._proc.stdin  # type: ignore[assignment]
        self._stdout: IO[bytes] = self._proc.stdout  # type: ignore[assignment]
        os.set_blocking(self._stdin.fileno(), False)
        self._stdin_writable = select.poll()
        self._stdin_writable.register(self._stdin.fileno(), select.POLLOUT)
        self._start_threads(command)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def send(self, msg: Mapping[str, Any]) -> None:
        """Queue one JSON-RPC message for the server's stdin.

        Raises `TypeError` or `ValueError` if ``msg`` is not representable as
        JSON (bytes values, non-finite floats).
        """
        text = json.dumps(msg, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        try:
            line = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: valid JSON only as its \udXXX escape
            line = json.dumps(msg, separators=(",", ":"), allow_nan=False).encode("ascii")
        self._inbox.put(line + b"\n")

    def stop(self) -> None:
        """Ask the writer to shut the process down; ``exited`` follows. Idempotent."""
        self._may_read.set()  # what it writes while it stops still counts, and its end of file must be seen
        if not self._stop_queued:
            self._stop_queued = True
            self._inbox.put(_Marker.STOP)

    def set_reading(self, reading: bool) -> None:
        """Pause (False) or resume (True) reading the server's stdout."""
        if reading or self._stop_queued:
            self._may_read.set()
        else:
            self._may_read.clear()

    def _start_threads(self, command: Sequence[str]) -> None:
        name = f"{self.sid[:8]}-{self.pid}"
        try:
            self._stderr_reader = threading.Thread(target=self._stderr_loop, name=f"server-stderr-{name}", daemon=True)
            self._stderr_reader.start()
            threading.Thread(target=self._read_loop, name=f"server-read-{name}", daemon=True).start()
            threading.Thread(target=self._write_loop, name=f"server-write-{name}", daemon=True).start()
        except RuntimeError as exc:  # out of threads; a reader that did start ends at EOF
            self._signal(signal.SIGKILL)
            self._proc.wait()
            raise SpawnError(command, exc) from exc

    # stderr thread

    def _stderr_loop(self) -> None:
        """Each line to the log (``troupe.server``) and to the adapter (``stderr`` events), rate-limited."""
        stderr: IO[bytes] = self._proc.stderr  # type: ignore[assignment]
        window, logged, suppressed = time.monotonic(), 0, 0
        try:
            while raw := stderr.readline(STDERR_LINE_CHARS * 4):
                if not raw.endswith(b"\n"):
                    while (rest := stderr.readline(1 << 16)) and not rest.endswith(b"\n"):
                        pass  # the rest of an over-long line
                now = time.monotonic()
                if now - window >= 1.0:
                    if suppressed:
                        server_log.warning(
                            "session %s pid %d: %d stderr lines suppressed", self.sid, self.pid, suppressed
                        )
                    window, logged, suppressed = now, 0, 0
                if logged >= STDERR_LINES_PER_SECOND:
                    suppressed += 1
                    continue
                logged += 1
                line = raw.decode("utf-8", "replace").rstrip()[:STDERR_LINE_CHARS]
                server_log.info("session %s pid %d: %s", self.sid, self.pid, line)
                self._report(("stderr", self.sid, line))
        except (OSError, ValueError):
            pass
        finally:
            if suppressed:
                server_log.warning("session %s pid %d: %d stderr lines suppressed", self.sid, self.pid, suppressed)
            stderr.close()

    # reader thread

    def _read_loop(self) -> None:
        may_read, limit = self._may_read.wait, self._max_line
        try:
            while may_read() and (line := self._stdout.readline(limit + 1)):
                if len(line) > limit and not line.endswith(b"\n"):
                    scan = EnvelopeScan()
                    scan.feed(line)
                    size = len(line) + self._skip_rest_of_line(scan)
                    self._refuse_line(scan.envelope, size, "size")
                elif line.count(b"{") + line.count(b"[") > self._max_containers:
                    self._refuse_line(envelope_of(line), len(line), "items")
                else:
                    self._read_line(line)
        except (OSError, ValueError) as exc:
            log.warning("session %s: reading server stdout failed: %s", self.sid, exc)
        finally:
            self._stdout.close()
            self._inbox.put(_Marker.EOF)

    def _read_line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError):
            msg = None
        if isinstance(msg, dict):
            self._report(("mcp", self.sid, msg, plain_json_line(line)))
            return
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        log.warning("session %s: server wrote a line that is not a JSON object, skipped: %r", self.sid, text[:200])

    def _skip_rest_of_line(self, scan: EnvelopeScan) -> int:
        """Read on to the end of an over-long line, keeping only its envelope; returns how many bytes that was."""
        skipped = 0
        while chunk := self._stdout.readline(1 << 20):
            skipped += len(chunk)
            scan.feed(chunk)
            if chunk.endswith(b"\n"):
                break
        return skipped

    def _refuse_line(self, envelope: dict[str, Any] | None, size: int, why: str) -> None:
        refusal = refusal_for(envelope, size, self._max_line if why == "size" else self._max_containers, why)
        if refusal is None:
            log.warning(
                "session %s: skipped a %d-byte line from the server (over its %s limit; no id)", self.sid, size, why
            )
            return
        to, answer = refusal
        log.warning("session %s: a %d-byte message of the server is over its %s limit; answered", self.sid, size, why)
        if to == "client":
            self._report(("mcp", self.sid, answer, True))  # in place of the server's response
        else:
            self.send(answer)

    # writer thread

    def _write_loop(self) -> None:
        cause = self._pump()
        escalation = self._shut_down()
        if cause is not _Marker.EOF:
            self._await_stdout_eof()
        self._stderr_reader.join(_STDOUT_DRAIN_TIMEOUT)  # its last lines go before ``exited``, as stdout's do
        returncode = self._proc.returncode
        self._report(("exited", self.sid, returncode, _exit_reason(returncode, cause, escalation)))

    def _pump(self) -> _Marker:
        """Write queued lines until a marker arrives or the pipe breaks."""
        while True:
            item = self._backlog.popleft() if self._backlog else self._inbox.get()
            if isinstance(item, _Marker):
                return item
            marker = self._write(item)
            if marker is not None:
                return marker

    def _write(self, line: bytes) -> _Marker | None:
        """Write one line to the non-blocking stdin; a full pipe must not hide a stop."""
        view = memoryview(line)
        while view:
            try:
                view = view[os.write(self._stdin.fileno(), view) :]
            except BlockingIOError:
                self._stdin_writable.poll(_WRITABLE_POLL_MS)
                marker = self._take_marker()
                if marker is not None:
                    return marker
            except OSError:  # BrokenPipeError above all: the reader side is gone
                return _Marker.BROKEN_PIPE
        return None

    def _take_marker(self) -> _Marker | None:
        """Move waiting lines to the backlog; return a marker if one was waiting."""
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return None
            if isinstance(item, _Marker):
                return item
            self._backlog.append(item)

    def _shut_down(self) -> signal.Signals | None:
        """The MCP stdio shutdown; returns the signal troupe had to send, if any."""
        with contextlib.suppress(OSError):  # a broken pipe has nothing left to flush
            self._stdin.close()
        if self._wait(self._stop_timeout):
            return None
        self._signal(signal.SIGTERM)
        if self._wait(self._term_timeout):
            return signal.SIGTERM
        self._signal(signal.SIGKILL)
        self._proc.wait()
        return signal.SIGKILL

    def _wait(self, timeout: float) -> bool:
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _signal(self, sig: signal.Signals) -> None:
        """Signal the whole process group (the server may have children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)

    def _await_stdout_eof(self) -> None:
        while True:
            try:
                if self._inbox.get(timeout=_STDOUT_DRAIN_TIMEOUT) is _Marker.EOF:
                    return
            except queue.Empty:
                log.warning("session %s: server stdout still open after exit (a child holds it?)", self.sid)
                return


def refusal_for(envelope: dict[str, Any] | None, size: int, limit: int, why: str) -> tuple[str, dict[str, Any]] | None:
    """Who to tell, and what, about a server message too large to carry, from its `envelope_of`.

    A response (no ``method``) is answered to the client, as the server's own answer would have been;
    a request of the server is answered to the server. Without a readable ``id`` there is nobody to
    answer. Returns ``("client" | "server", message)`` or None.
    """
    if envelope is None or not jsonrpc.is_id(envelope.get("id")):
        return None
    request_id = envelope["id"]
    what = f"{size} bytes, over the limit of {limit} bytes" if why == "size" else f"more than {limit} maps and arrays"
    data = {"limit": limit, "size": size} if why == "size" else {"limit": limit, "items": limit + 1}
    if "method" in envelope:
        text = f"troupe: this request is {what} (the adapter's max message size); it was not sent to the client"
        return "server", jsonrpc.error(request_id, jsonrpc.MESSAGE_TOO_LARGE, text, data)
    text = (
        f"troupe: the server's response is {what} (max_server_frame_bytes / max_server_frame_items in the "
        "daemon's config); ask for less, or have the limit raised"
    )
    return "client", jsonrpc.error(request_id, jsonrpc.MESSAGE_TOO_LARGE, text, data)


def plain_json_line(line: bytes) -> bool:
    """Whether an object ``json.loads`` read from ``line`` is surely what the daemon's JSON check accepts.

    ``json.loads`` gives str keys and JSON values, with two exceptions the daemon refuses: the constants
    ``NaN``/``Infinity`` and nesting deeper than ``jsonrpc.MAX_DEPTH``. A line without those words and with fewer
    containers than that is plain JSON, found by two C scans of the line, and its frame says so
    (``checked``), which spares the daemon its walk of the message; any other line's message is checked
    by the daemon as before (it may be fine: the words can be inside strings)."""
    return b"NaN" not in line and b"Infinity" not in line and line.count(b"{") + line.count(b"[") <= jsonrpc.MAX_DEPTH


def _exit_reason(returncode: int, cause: _Marker, escalation: signal.Signals | None) -> str:
    """A short account of how the process ended, e.g. ``stopped: escalated to SIGTERM, ...``."""
    status = describe_returncode(returncode)
    if escalation is not None:
        status = f"escalated to {escalation.name}, {status}"
    if cause is _Marker.STOP:
        return f"stopped: {status}"
    return f"{cause.value}: {status}" if escalation is not None else status


def describe_returncode(returncode: int) -> str:
    """``exited with code N`` or ``killed by signal SIGX``, from a `subprocess` returncode."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"killed by signal {name}"


def _spawn(command: Sequence[str], env: Mapping[str, str] | None, cwd: str | None) -> subprocess.Popen[bytes]:
    if not command:
        raise SpawnError(command, ValueError("empty command"))
    try:
        return subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        raise SpawnError(command, exc) from exc
