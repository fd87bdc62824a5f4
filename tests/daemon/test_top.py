"""``troupe top``: the pure screen, then the real thing in a pseudo-terminal against a daemon."""

from __future__ import annotations

import fcntl
import io
import math
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon

from mcp_troupe.actors.cli.top import EXIT_USAGE, Poller, render, run, sort_by_activity

STATS: dict[str, Any] = {
    "uptime_s": 3725.0,
    "sessions": {"open": 3, "opened": 41, "closed": {"client": 30, "idle": 8}},
    "pending": 2,
    "requests": {"total": 1234, "per_second": 5.25},
    "refused": {"server_busy": 4},
    "errors": {"-32603": 7, "-32010": 1},
    "frames": {"in": {"front": 900, "back": 850}, "out": {"front": 860, "back": 880}, "dropped": {"overflow": 3}},
    "adapters": 2,
}


def snapshot(sid: str, idle_s: float, **extra: Any) -> dict[str, Any]:
    return {
        "sid": sid,
        "server": "example",
        "state": "active",
        "failure": None,
        "age_s": 600.0,
        "idle_s": idle_s,
        "frames": {"client_to_server": 10, "server_to_client": 12},
        "dropped": 0,
        "pending_count": {"client_to_server": 1, "server_to_client": 2},
        "pending": [],
        "tags": ["ci", "nightly"],
        "client": "00ab",
        "restarts": 0,
    } | extra


def rows(lines: list[str]) -> list[str]:
    """The session rows: what follows the column header."""
    header = next(i for i, line in enumerate(lines) if line.startswith("SID"))
    return lines[header + 1 :]


# -- render ---------------------------------------------------------------------------------


def test_header_shows_the_totals() -> None:
    text = "\n".join(render(STATS, [], 200, 40))
    assert text.startswith("troupe top  up 1h")
    for shown in (
        "sessions 3 open, 41 opened",
        "pending 2",
        "requests 1234 (5.2/s)",
        "adapters 2",
        "errors -32603=7 -32010=1",
        "refused server_busy=4",
        "closed client=30 idle=8",
        "frames in front=900 back=850",
        "out back=880 front=860",
        "dropped overflow=3",
    ):
        assert shown in text


def test_one_row_per_session_with_its_columns() -> None:
    session = snapshot("Zx8_abcdefghijklmnopqr", 5.0, server="everything", state="initializing")
    (row,) = rows(render(STATS, [session], 200, 40))
    assert row.split() == ["Zx8_abcd", "everything", "initializing", "10m", "5s", "3", "22", "ci,nightly"]


def test_sessions_are_sorted_most_recently_active_first() -> None:
    sessions = [
        snapshot("old", 300.0),
        snapshot("new", 0.5),
        snapshot("unknown", 0.0) | {"idle_s": None},
        snapshot("mid", 9),
    ]
    assert [s["sid"] for s in sort_by_activity(sessions)] == ["new", "mid", "old", "unknown"]
    assert [row.split()[0] for row in rows(render(STATS, sessions, 200, 40))] == ["new", "mid", "old", "unknown"]


def test_lines_are_cut_to_the_width() -> None:
    session = snapshot("s1", 1.0, server="a-server-with-a-very-long-name", tags=["t" * 300])
    lines = render(STATS, [session], 50, 40)
    assert all(len(line) <= 50 for line in lines)
    assert "a-server-with-a~" in rows(lines)[0]


def test_rows_beyond_the_height_are_counted() -> None:
    sessions = [snapshot(f"s{i:03}", float(i)) for i in range(100)]
    lines = render(STATS, sessions, 120, 20)
    assert len(lines) == 20
    assert lines[-1] == "... 86 more sessions"
    assert [row.split()[0] for row in rows(lines)[:-1]] == [f"s{i:03}" for i in range(14)]


def test_exactly_enough_room_needs_no_more_line() -> None:
    sessions = [snapshot(f"s{i}", float(i)) for i in range(3)]
    lines = render(STATS, sessions, 120, 8)
    assert [row.split()[0] for row in rows(lines)] == ["s0", "s1", "s2"]


def test_empty_replies_still_give_a_screen() -> None:
    lines = render({}, [], 80, 24)
    assert lines[0].startswith("troupe top  up -  sessions - open")
    assert rows(lines) == []


def test_the_error_is_shown_right_under_the_title() -> None:
    lines = render({}, [], 80, 2, error="no answer from a troupe daemon")
    assert lines == [lines[0], "error: no answer from a troupe daemon"]


@pytest.mark.parametrize(("width", "height"), [(0, 0), (1, 1), (0, 10), (10, 0), (1, 50), (5, 3), (200, 1), (-3, -3)])
def test_tiny_terminals_do_not_break_it(width: int, height: int) -> None:
    sessions = [snapshot(f"s{i}", float(i)) for i in range(30)]
    for stats, listed in ((STATS, sessions), ({}, [])):
        lines = render(stats, listed, width, height, error="boom")
        assert len(lines) <= max(height, 0)
        assert all(len(line) <= width for line in lines)


def test_odd_and_missing_fields_show_as_dashes() -> None:
    odd = {"sid": 42, "idle_s": "soon", "frames": None, "pending_count": [], "tags": "x", "age_s": True}
    stats = {"sessions": "many", "requests": {"total": None}, "errors": [], "frames": {"in": {}}}
    lines = render(stats, [odd, {}], 120, 20)
    assert [row.split() for row in rows(lines)] == [["-"] * 7, ["42", *["-"] * 6]]
    assert "frames in 0  out -" in "\n".join(lines)


def test_control_characters_do_not_reach_the_terminal() -> None:
    session = snapshot("s1", 1.0, server="evil\x1b[2Jname", tags=["a\nb"])
    (row,) = rows(render(STATS, [session], 200, 40))
    assert "\x1b" not in row and "\n" not in row
    assert "a?b" in row


def test_large_counts_are_compact() -> None:
    session = snapshot("s1", 1.0, frames={"client_to_server": 123_456, "server_to_client": 0})
    stats = STATS | {"requests": {"total": 4_500_000, "per_second": 12.0}, "pending": 2_000_000_000}
    lines = render(stats, [session], 200, 40)
    assert "requests 4.5M (12.0/s)" in lines[0]
    assert "pending 2.0G" in lines[0]
    assert rows(lines)[0].split()[6] == "123k"


def test_poller_reports_a_missing_daemon_and_does_not_raise(tmp_path: Path) -> None:
    poller = Poller(f"ipc://{tmp_path / 'front.sock'}", timeout=0.2)
    poller.poll()
    assert poller.error is not None and "socket file missing" in poller.error
    assert (poller.stats, poller.sessions) == ({}, [])
    poller.close()


@pytest.mark.parametrize("interval", [0.0, -1.0, 0.05, math.nan, math.inf])
def test_run_refuses_a_bad_interval(interval: float, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(None, interval) == EXIT_USAGE
    assert "interval of at least 0.1 seconds" in capsys.readouterr().err


def test_run_needs_a_terminal(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO())  # not a tty, even under pytest -s in a terminal
    assert run(None) == EXIT_USAGE
    assert "needs a terminal" in capsys.readouterr().err


# -- end to end, in a pseudo-terminal ------------------------------------------------------

TROUPE = Path(sys.executable).parent / "troupe"
ANSI = re.compile(rb"\x1b(\[[0-?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[=>78MDE])")


def top_command(endpoint: str) -> list[str]:
    """How the tests start ``troupe top``: the one place to switch once the CLI has it."""
    return [str(TROUPE), "top", "--endpoint", endpoint]


@dataclass
class Terminal:
    """A child process on the slave side of a pseudo-terminal, read and typed at through the master."""

    pid: int
    master: int
    output: bytes = b""
    status: int | None = None

    def screen(self) -> str:
        """All output so far with the escape sequences taken out."""
        return ANSI.sub(b"", self.output).decode(errors="replace")

    def read_until(self, condition: Callable[[str], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition(self.screen()):
            if time.monotonic() > deadline or not self._read(deadline):
                raise AssertionError(f"no {what} within {timeout}s; the screen so far:\n{self.screen()[-3000:]}")

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def wait(self, timeout: float) -> int:
        """The exit status, draining the output meanwhile so the child never blocks on writing."""
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
            elif time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout}s; the screen so far:\n{self.screen()[-3000:]}")
            else:
                self._read(min(deadline, time.monotonic() + 0.05))
        return self.status

    def close(self) -> None:
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.status = -signal.SIGKILL
        os.close(self.master)

    def _read(self, deadline: float) -> bool:
        """Read what is there until ``deadline``; False once the child has closed the terminal."""
        ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
        if ready:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the slave side is closed
                return False
            if not data:
                return False
            self.output += data
        return True


def spawn_in_terminal(argv: list[str], env: dict[str, str], rows: int = 30, columns: int = 120) -> Terminal:
    """Start ``argv`` as the session leader of a new pseudo-terminal of the given size."""
    pid, master = pty.fork()
    if pid == 0:  # the child: only system calls until exec
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    return Terminal(pid, master)


def start_top(daemon: RunningDaemon) -> Terminal:
    env = {key: value for key, value in daemon.env.items() if key not in ("LINES", "COLUMNS")} | {"TERM": "xterm"}
    return spawn_in_terminal(top_command(daemon.front), env)


@pytest.fixture
def top(daemon: RunningDaemon) -> Iterator[Terminal]:
    terminal = start_top(daemon)
    try:
        yield terminal
    finally:
        terminal.close()


def shows_the_header(screen: str) -> bool:
    return "troupe top" in screen and "SID" in screen and "SERVER" in screen


@pytest.mark.parametrize("key", [b"q", b"\x03"], ids=["q", "ctrl-c"])
def test_top_shows_the_header_and_quits_with_status_0(top: Terminal, key: bytes) -> None:
    top.read_until(shows_the_header, 15, "header")
    top.type(key)
    assert top.wait(20) == 0  # generous: a loaded 2-core machine (5 s was once too short in a CI-like run)


def test_top_shows_an_open_session(daemon: RunningDaemon) -> None:
    with daemon.client() as client:
        session = client.open("example")
        session.initialize()
        terminal = start_top(daemon)  # after the open, so the first screen already has the row
        try:
            terminal.read_until(lambda screen: session.sid[:8] in screen, 15, f"row of session {session.sid}")
            terminal.type(b"q")
            assert terminal.wait(20) == 0
        finally:
            terminal.close()
        session.close()
