"""``troupe top``: a live, htop-like view of the daemon's sessions.

Every ``interval`` seconds it asks the daemon for ``stats`` and
``sessions.list`` and redraws: a header with the daemon's totals, then one row
per session, most recently active first. ``q`` or Ctrl-C quits with status 0.

The screen is built by `render`, a pure function of the two replies and the
terminal size, so it is tested without a terminal; `run` is the thin curses
shell around it. The shell waits for keys with ``stdscr.timeout`` until the
next refresh is due, so it never sleeps and a key is handled at once. An
unreachable daemon is an error line on the screen, not an exit: it keeps
retrying with a fresh connection.
"""

from __future__ import annotations

import curses
import math
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from mcp_troupe.actors.core.durations import format_duration
from mcp_troupe.transport.client import Client, FrameRefused, TroupeError
from mcp_troupe.transport.runtime import RuntimeDirError

EXIT_OK: Final = 0
EXIT_USAGE: Final = 2
MIN_INTERVAL: Final = 0.1

REQUEST_TIMEOUT: Final = 2.0
"""Seconds to wait for each control op before showing the daemon as unreachable."""

TITLE: Final = "troupe top"
SID_CHARS: Final = 8
QUIT_KEYS: Final = frozenset({ord("q"), ord("Q"), 3})
"""``q``, ``Q`` and Ctrl-C read as a key (in cbreak mode Ctrl-C arrives as SIGINT instead)."""

_COLUMNS: Final = (
    # title, width (0 = the rest of the line), right-aligned
    ("SID", SID_CHARS, False),
    ("SERVER", 16, False),
    ("STATE", 13, False),
    ("AGE", 5, True),
    ("IDLE", 5, True),
    ("PEND", 5, True),
    ("FRAMES", 7, True),
    ("TAGS", 0, False),
)


# -- rendering (pure) --------------------------------------------------------------------


def render(
    stats: dict[str, Any],
    sessions: list[dict[str, Any]],
    width: int,
    height: int,
    *,
    error: str | None = None,
) -> list[str]:
    """The screen as at most ``height`` lines of at most ``width`` characters.

    ``stats`` and ``sessions`` are the replies of the ``stats`` and
    ``sessions.list`` control ops (``sessions`` is the reply's list); missing
    fields show as ``-`` rather than failing, so a partial or older daemon
    still gives a screen. ``error``, if any, is shown under the title line.
    """
    if width <= 0 or height <= 0:
        return []
    title, *totals = _header(stats)
    # the error goes right under the title so that even a tiny terminal shows it
    lines = [title, *([f"error: {error}"] if error else []), *totals, "", _row([name for name, _, _ in _COLUMNS])]
    room = height - len(lines)
    rows = [_session_row(snapshot) for snapshot in sort_by_activity(sessions)]
    if len(rows) > room > 0:
        rows = [*rows[: room - 1], f"... {len(rows) - room + 1} more sessions"]
    lines += rows
    return [_fit(line, width) for line in lines[:height]]


def sort_by_activity(sessions: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Most recently active (smallest ``idle_s``) first; sessions without one last."""

    def key(snapshot: dict[str, Any]) -> tuple[bool, float, str]:
        idle = _number(snapshot.get("idle_s"))
        return (idle is None, idle or 0.0, str(snapshot.get("sid", "")))

    return sorted(sessions, key=key)


def _header(stats: Mapping[str, Any]) -> list[str]:
    sessions = _mapping(stats.get("sessions"))
    requests = _mapping(stats.get("requests"))
    frames = _mapping(stats.get("frames"))
    rate = _number(requests.get("per_second"))
    return [
        f"{TITLE}  up {_duration(stats.get('uptime_s'))}"
        f"  sessions {_count(sessions.get('open'))} open, {_count(sessions.get('opened'))} opened"
        f"  pending {_count(stats.get('pending'))}"
        f"  requests {_count(requests.get('total'))} ({'-' if rate is None else f'{rate:.1f}'}/s)"
        f"  adapters {_count(stats.get('adapters'))}",
        f"errors {_tally(stats.get('errors'))}  refused {_tally(stats.get('refused'))}"
        f"  closed {_tally(sessions.get('closed'))}",
        f"frames in {_tally(frames.get('in'))}  out {_tally(frames.get('out'))}"
        f"  dropped {_tally(frames.get('dropped'))}",
    ]


def _session_row(snapshot: Mapping[str, Any]) -> str:
    pending = _mapping(snapshot.get("pending_count"))
    frames = _mapping(snapshot.get("frames"))
    tags = snapshot.get("tags")
    return _row(
        [
            str(snapshot.get("sid", "-"))[:SID_CHARS],
            str(snapshot.get("server", "-")),
            str(snapshot.get("state", "-")),
            _duration(snapshot.get("age_s")),
            _duration(snapshot.get("idle_s")),
            _sum(pending.get("client_to_server"), pending.get("server_to_client")),
            _sum(frames.get("client_to_server"), frames.get("server_to_client")),
            ",".join(map(str, tags)) if isinstance(tags, list) else "",
        ]
    )


def _row(cells: list[str]) -> str:
    """Cells laid out in `_COLUMNS`, each cut to its width."""
    out = []
    for cell, (_, width, right) in zip(cells, _COLUMNS, strict=True):
        if width == 0:
            out.append(cell)
        else:
            cut = cell if len(cell) <= width else cell[: width - 1] + "~"
            out.append(cut.rjust(width) if right else cut.ljust(width))
    return " ".join(out).rstrip()


def _fit(line: str, width: int) -> str:
    """``line`` made printable (a server name or tag could hold control characters) and cut to ``width``."""
    printable = "".join(char if char.isprintable() else "?" for char in line)
    return printable[:width]


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _count(value: object) -> str:
    """A count in at most five characters or so: ``12345``, ``123k``, ``4.5M``."""
    number = _number(value)
    if number is None:
        return "-"
    if abs(number) < 100_000:
        return f"{number:g}"
    for divisor, suffix in ((1e9, "G"), (1e6, "M")):
        if abs(number) >= divisor:
            scaled = number / divisor
            return f"{scaled:.1f}{suffix}" if abs(scaled) < 10 else f"{scaled:.0f}{suffix}"
    return f"{number / 1e3:.0f}k"


def _sum(*values: object) -> str:
    numbers = [_number(value) for value in values]
    present = [number for number in numbers if number is not None]
    return _count(sum(present)) if present else "-"


def _tally(counts: object) -> str:
    """``{reason: n}`` as ``reason=n ...`` (largest first), ``0`` if empty, ``-`` if absent."""
    if not isinstance(counts, Mapping):
        return "-"
    items = sorted(counts.items(), key=lambda item: (-(_number(item[1]) or 0), str(item[0])))
    return " ".join(f"{key}={_count(value)}" for key, value in items) or "0"


def _duration(value: object) -> str:
    seconds = _number(value)
    return "-" if seconds is None else format_duration(seconds)


# -- polling the daemon ------------------------------------------------------------------


@dataclass
class Poller:
    """Fetches the two replies, holding one connection and replacing it after a failure.

    A fresh connection after a timeout matters: the late reply to the old
    request would otherwise sit in the client forever.
    """

    endpoint: str | None
    timeout: float = REQUEST_TIMEOUT
    stats: dict[str, Any] = field(default_factory=dict)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    _client: Client | None = field(default=None, init=False, repr=False)

    def poll(self) -> None:
        """Refresh `stats`, `sessions` and `error`; never raises a `TroupeError`."""
        try:
            client = self._connect()
        except (TroupeError, RuntimeDirError) as exc:
            self._unreachable(exc)
            return
        errors = []
        for op in ("stats", "sessions.list"):
            try:
                self._store(op, client.control(op, timeout=self.timeout))
            except FrameRefused as exc:
                errors.append(f"{op}: {exc}")
            except TroupeError as exc:
                self._unreachable(exc)
                return
        self.error = "; ".join(errors) or None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _connect(self) -> Client:
        if self._client is None:
            self._client = Client(self.endpoint, timeout=self.timeout)
        return self._client

    def _store(self, op: str, result: dict[str, Any]) -> None:
        if op == "stats":
            self.stats = result
        else:
            sessions = result.get("sessions")
            self.sessions = [s for s in sessions if isinstance(s, dict)] if isinstance(sessions, list) else []

    def _unreachable(self, exc: Exception) -> None:
        self.close()
        self.stats, self.sessions = {}, []
        self.error = f"{exc} (retrying)"


# -- the curses shell --------------------------------------------------------------------


def run(endpoint: str | None, interval: float = 1.0) -> int:
    """Show the live view until ``q`` or Ctrl-C; returns the exit status."""
    if not (math.isfinite(interval) and interval >= MIN_INTERVAL):
        print(f"troupe: top needs an interval of at least {MIN_INTERVAL} seconds, got {interval}", file=sys.stderr)
        return EXIT_USAGE
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("troupe: top needs a terminal (stdin and stdout must be a tty)", file=sys.stderr)
        return EXIT_USAGE
    poller = Poller(endpoint)
    try:
        curses.wrapper(_loop, poller, interval)
    except KeyboardInterrupt:
        pass
    except curses.error as exc:
        print(f"troupe: top cannot use this terminal: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        poller.close()
    return EXIT_OK


def _loop(stdscr: curses.window, poller: Poller, interval: float) -> None:
    _hide_cursor()
    while True:
        poller.poll()
        if _wait_for_keys(stdscr, poller, time.monotonic() + interval):
            return


def _wait_for_keys(stdscr: curses.window, poller: Poller, due: float) -> bool:
    """Redraw and handle keys until the next poll is ``due``; True if the user quit."""
    _draw(stdscr, poller)
    while (remaining := due - time.monotonic()) > 0:
        stdscr.timeout(max(1, int(remaining * 1000)))
        key = stdscr.getch()
        if key in QUIT_KEYS:
            return True
        if key == curses.KEY_RESIZE:
            _draw(stdscr, poller)
    return False


def _draw(stdscr: curses.window, poller: Poller) -> None:
    height, width = stdscr.getmaxyx()
    lines = render(poller.stats, poller.sessions, width, height, error=poller.error)
    stdscr.erase()
    for y, line in enumerate(lines):
        text = line.encode(stdscr.encoding, "replace").decode(stdscr.encoding)
        try:
            stdscr.addnstr(y, 0, text, width)
        except curses.error:
            pass  # writing the bottom-right cell moves the cursor off the screen: drawn all the same
    stdscr.refresh()


def _hide_cursor() -> None:
    try:
        curses.curs_set(0)
    except curses.error:
        pass  # the terminal cannot hide it
