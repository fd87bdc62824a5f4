"""Operator subcommands: sessions, stats, health, events, top.

Each talks to a running daemon through control operations (``ctl`` frames,
see docs/protocol.rst), prints a readable table by default and JSON with
``--json``. Exit status: 0 on success, 1 when the daemon refused the
operation (or ``health`` found it not serving), 2 on bad usage, 3 when the
daemon cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from mcp_troupe.actors.cli.keys import add_key_flags
from mcp_troupe.actors.core.durations import format_duration, parse_duration
from mcp_troupe.transport.client import Client, FrameRefused, TroupeError
from mcp_troupe.transport.client.events import subscribe
from mcp_troupe.transport.keys import KeyFileError
from mcp_troupe.transport.runtime import RuntimeDirError

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


def add_commands(sub: Any) -> None:
    sessions = sub.add_parser("sessions", help="list, show, close and clean up sessions")
    verbs = sessions.add_subparsers(required=True, metavar="VERB")
    listing = _command(verbs, "list", "open sessions, most recently active first", _sessions_list)
    listing.add_argument("--server", help="only sessions of this server")
    listing.add_argument("--state", help="only sessions in this state (initializing, active, shutting_down)")
    _command(verbs, "show", "everything the session actor keeps", _sessions_show).add_argument("sid")
    _command(verbs, "logs", "the last lines the session's server wrote to stderr", _sessions_logs).add_argument("sid")
    _command(verbs, "close", "close a session (reason: operator)", _sessions_close).add_argument("sid")
    cleanup = _command(verbs, "cleanup", "close sessions older (or idle longer) than a duration", _sessions_cleanup)
    cleanup.add_argument("--older-than", required=True, metavar="DURATION", help="e.g. 90s, 30m, 12h, 7d")
    cleanup.add_argument("--idle", action="store_true", help="measure idle time instead of age")
    _command(sub, "stats", "counts and rates", _stats)
    _command(sub, "health", "exit 0 when serving, non-zero with the reason otherwise", _health)
    events = _command(sub, "events", "print the event stream as JSON lines", _events, json_flag=False)
    events.add_argument("--topic", default="", metavar="PREFIX", help="only topics starting with PREFIX")
    events.add_argument("--events-endpoint", help="the daemon's event endpoint (default: the runtime directory's)")
    top = _command(sub, "top", "a live view of sessions, refreshed every second (q quits)", _top, json_flag=False)
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")


def _command(
    sub: Any, name: str, text: str, func: Callable[[argparse.Namespace], int], *, json_flag: bool = True
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=text, description=text)
    parser.add_argument(
        "--endpoint", help="the daemon's front endpoint (default: found as docs/configuration.rst says)"
    )
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_key_flags(parser)
    parser.set_defaults(func=func)
    return parser


def _fail(message: str, code: int) -> int:
    print(f"troupe: {message}", file=sys.stderr)
    return code


def _call(args: argparse.Namespace, op: str, op_args: dict[str, Any] | None = None) -> dict[str, Any] | int:
    """The operation's result, or an exit status after printing why it failed."""
    try:
        with Client(args.endpoint, timeout=10) as client:
            return client.control(op, op_args)
    except FrameRefused as exc:
        return _fail(f"{op} refused: {exc}", EXIT_REFUSED)
    except (TroupeError, RuntimeDirError) as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)


def _print(args: argparse.Namespace, result: dict[str, Any], table: Callable[[dict[str, Any]], str]) -> int:
    print(json.dumps(result, indent=2) if args.json else table(result))
    return EXIT_OK


# -- sessions ------------------------------------------------------------------------


def _sessions_list(args: argparse.Namespace) -> int:
    filters = {k: v for k, v in (("server", args.server), ("state", args.state)) if v}
    result = _call(args, "sessions.list", filters)
    return result if isinstance(result, int) else _print(args, result, session_table)


def session_table(result: dict[str, Any]) -> str:
    rows = [("SID", "SERVER", "STATE", "ERA", "AGE", "IDLE", "PENDING", "FRAMES", "TAGS")]
    for s in result["sessions"]:
        pending = sum(s["pending_count"].values())
        frames = sum(s["frames"].values())
        rows.append(
            (
                s["sid"],
                s["server"],
                s["state"],
                s["era"],
                format_duration(s["age_s"]),
                format_duration(s["idle_s"]),
                str(pending),
                str(frames),
                ",".join(s["tags"]) or "-",
            )
        )
    lines = _columns(rows)
    if result.get("missing"):
        lines.append(f"({result['missing']} sessions did not answer in time)")
    return "\n".join(lines) if len(rows) > 1 else "no open sessions"


def _sessions_logs(args: argparse.Namespace) -> int:
    result = _call(args, "sessions.logs", {"sid": args.sid})
    if isinstance(result, int):
        return result
    return _print(args, result, lambda r: "\n".join(r["lines"]) if r["lines"] else "(nothing on stderr yet)")


def _sessions_show(args: argparse.Namespace) -> int:
    result = _call(args, "sessions.show", {"sid": args.sid})
    return result if isinstance(result, int) else _print(args, result, _show_table)


def _show_table(result: dict[str, Any]) -> str:
    s = result["session"]
    lines = [f"{key:<17} {value}" for key, value in s.items() if key not in ("pending", "frames", "pending_count")]
    lines.append(
        f"{'frames':<17} client->server {s['frames']['client_to_server']}, "
        f"server->client {s['frames']['server_to_client']}"
    )
    lines.append(f"pending           {len(s['pending'])}")
    lines += [
        f"  {p['direction']:<17} id {p['id']!s:<10} {p['method']:<28} {format_duration(p['age_s'])}"
        for p in s["pending"]
    ]
    return "\n".join(lines)


def _sessions_close(args: argparse.Namespace) -> int:
    result = _call(args, "sessions.close", {"sid": args.sid})
    return result if isinstance(result, int) else _print(args, result, lambda r: f"closed {r['closed'][0]}")


def _sessions_cleanup(args: argparse.Namespace) -> int:
    try:
        seconds = parse_duration(args.older_than)
    except ValueError as exc:
        return _fail(f"--older-than {args.older_than!r}: {exc}", EXIT_USAGE)
    result = _call(args, "sessions.cleanup", {"older_than_s": seconds, "idle": args.idle})
    if isinstance(result, int):
        return result
    return _print(
        args, result, lambda r: f"closed {len(r['closed'])} session(s)" + "".join(f"\n  {s}" for s in r["closed"])
    )


# -- stats and health -------------------------------------------------------------------


def _stats(args: argparse.Namespace) -> int:
    result = _call(args, "stats")
    return result if isinstance(result, int) else _print(args, result, stats_table)


def stats_table(s: dict[str, Any]) -> str:
    closed = ", ".join(f"{k} {v}" for k, v in sorted(s["sessions"]["closed"].items())) or "none"
    refused = ", ".join(f"{k} {v}" for k, v in sorted(s["refused"].items())) or "none"
    errors = ", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items())) or "none"
    frames = s["frames"]
    return "\n".join(
        [
            f"uptime      {format_duration(s['uptime_s'])}",
            f"sessions    {s['sessions']['open']} open, {s['sessions']['opened']} opened; closed: {closed}",
            f"requests    {s['requests']['total']} total, {s['requests']['per_second']}/s; {s['pending']} pending",
            f"refused     {refused}",
            f"errors      {errors}",
            f"frames      in {_pairs(frames['in'])}; out {_pairs(frames['out'])}; dropped {_pairs(frames['dropped'])}",
            f"adapters    {s['adapters']}",
        ]
    )


def _health(args: argparse.Namespace) -> int:
    result = _call(args, "health")
    if isinstance(result, int):
        return result
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2))
    servers = ", ".join(f"{k} ({v} adapter{'s' * (v != 1)})" for k, v in sorted(result["servers"].items()))
    if result["status"] != "serving":
        return _fail(f"not serving: {result['status']}", EXIT_REFUSED)
    if not args.json:
        print(f"serving: {result['sessions']} sessions, {result['pending']} pending; servers: {servers or 'none'}")
    return EXIT_OK


# -- events and top ----------------------------------------------------------------------


def _events(args: argparse.Namespace) -> int:
    try:
        for payload in subscribe(args.events_endpoint, args.topic):
            sys.stdout.write(payload.decode() + "\n")
            sys.stdout.flush()
    except (RuntimeDirError, KeyFileError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def _top(args: argparse.Namespace) -> int:
    from mcp_troupe.actors.cli.top import run

    return run(args.endpoint, args.interval)


def _columns(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def _pairs(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "0"
