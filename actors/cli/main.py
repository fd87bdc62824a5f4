"""The ``troupe`` command line: serve, adapter, call."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from mcp_troupe.actors.cli import keys as keys_cli
from mcp_troupe.actors.cli import operator as operator_cli
from mcp_troupe.actors.core.options import LIMIT_HELP, Limits
from mcp_troupe.actors.daemon.config import LIMIT_KEYS, LOG_LEVELS, ConfigError, load
from mcp_troupe.actors.daemon.launch import DaemonError, launch
from mcp_troupe.actors.telemetry import logs
from mcp_troupe.transport import discovery
from mcp_troupe.transport.adapter.server_process import MAX_LINE_BYTES, MAX_LINE_CONTAINERS
from mcp_troupe.transport.bridge.stdio import MAX_LINE_BYTES as CONNECT_MAX_LINE_BYTES
from mcp_troupe.transport.client import Client, DaemonUnavailable, FrameRefused, RequestError, TroupeError
from mcp_troupe.transport.keys import Credentials, KeyFileError
from mcp_troupe.transport.runtime import BACK_SOCKET, FRONT_SOCKET, RuntimeDirError, ipc_endpoint

EXIT_OK = 0
EXIT_REQUEST_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


def version() -> str:
    try:
        return metadata.version("mcp-troupe")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    head, tail = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = _parser().parse_args(head)
    args.command = tail
    keys_cli.export_keys(args)
    _setup_logging(getattr(args, "log_level", None) or "info", getattr(args, "log_format", None) or "text")
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # stdout was closed early (``troupe call ... | head``): nothing to report, and Python
        # must not try to flush it again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="troupe", description="MCP session daemon built on actors and ZeroMQ.")
    parser.add_argument("--version", action="version", version=f"troupe {version()}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the daemon in the foreground")
    serve.add_argument("--config", type=Path, help="TOML config file (default: embedded default, see docs)")
    serve.add_argument("--front", help="endpoint for clients (overrides [daemon] front)")
    serve.add_argument("--back", help="endpoint for adapters (overrides [daemon] back)")
    serve.add_argument("--runtime-dir", help="directory for the default ipc endpoints")
    serve.add_argument("--log-level", choices=LOG_LEVELS, help="default: info")
    serve.add_argument("--log-format", choices=("text", "json"), help="default: text")
    serve.add_argument("--metrics-address", metavar="HOST:PORT", help="serve Prometheus metrics here (off by default)")
    serve.add_argument("--audit-log", metavar="PATH", help="append JSON-lines audit records here (off by default)")
    serve.add_argument("--events", metavar="ENDPOINT", help="event stream endpoint (default: the runtime directory's)")
    serve.add_argument(
        "--state-dir", help="where the daemon's keys and session store are (overrides [daemon] state_dir)"
    )
    serve.add_argument(
        "--store",
        choices=("sqlite", "none"),
        help="keep session records across restarts in <state_dir>/sessions.sqlite3 (default: sqlite), or not",
    )
    serve.add_argument(
        "--orphan-grace",
        type=float,
        metavar="SECONDS",
        help="how long adapters keep their servers after the daemon is gone (overrides [daemon] orphan_grace)",
    )
    serve.add_argument(
        "--allow-insecure-tcp",
        dest="allow_insecure_tcp",
        action="store_const",
        const=True,
        help="serve tcp endpoints without CurveZMQ when the daemon has no key pair (docs/security.rst)",
    )
    serve.add_argument(
        "--http",
        dest="http_address",
        metavar="HOST:PORT",
        help="serve Streamable HTTP here, e.g. 127.0.0.1:8080 (overrides [http] address; off by default)",
    )
    serve.add_argument(
        "--enable-fault-injection",
        dest="fault_injection",
        action="store_const",
        const=True,
        help="allow the inject_fault control operation (for restart tests and drills; off by default)",
    )
    tree = serve.add_argument_group("supervision (override [supervisor]; defaults in docs/supervision.rst)")
    tree.add_argument("--supervisor-strategy", dest="strategy", help="one_for_one (default), one_for_all, rest_for_one")
    tree.add_argument(
        "--supervisor-intensity",
        dest="intensity",
        type=int,
        metavar="N",
        help="restarts allowed within the period (default 1)",
    )
    tree.add_argument("--supervisor-period", dest="period", type=float, metavar="S", help="seconds (default 5)")
    tree.add_argument(
        "--supervisor-backoff",
        dest="backoff_initial",
        type=float,
        metavar="S",
        help="seconds before a restart, doubling (default 0)",
    )
    limits = serve.add_argument_group("limits (override [limits]; defaults in docs/limits.rst)")
    defaults = Limits()
    for name, (types, _form) in LIMIT_KEYS.items():
        flag, text = f"--{name.replace('_', '-')}", f"{LIMIT_HELP[name]} (default {getattr(defaults, name)})"
        metavar = "BOOL" if bool in types else "POLICY" if str in types else "N"
        limits.add_argument(flag, dest=name, type=_limit_type(types), metavar=metavar, help=text)
    limits.add_argument(
        "--method-timeout",
        action="append",
        default=[],
        metavar="METHOD=SECONDS",
        help="per-method request timeout, e.g. tools/call=300 (repeatable)",
    )
    serve.set_defaults(func=_serve)

    adapter = sub.add_parser(
        "adapter",
        help="bridge one MCP server to the daemon: a stdio command, or a remote one by --url",
        usage="troupe adapter NAME [options] (-- COMMAND [ARGS...] | --url URL)",
    )
    adapter.add_argument("name", help="server name clients open sessions to")
    adapter.add_argument("--endpoint", help="the daemon's back endpoint (default: the runtime directory's)")
    adapter.add_argument("--capacity", type=int, default=0, help="most sessions at once; 0 = no limit (default)")
    adapter.add_argument("--stop-timeout", type=float, default=2.0, help="seconds after closing stdin (default 2)")
    adapter.add_argument("--term-timeout", type=float, default=2.0, help="seconds after SIGTERM (default 2)")
    adapter.add_argument("--cwd", help="working directory of the server processes")
    adapter.add_argument("--exit-with-parent", action="store_true", help="exit when the parent process ends")
    adapter.add_argument(
        "--orphan-grace",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep the servers this long when the daemon is gone, for the next one to take back (default 0)",
    )
    adapter.add_argument("--log-level", choices=LOG_LEVELS)
    adapter.add_argument("--log-format", choices=("text", "json"), help="default: text")
    adapter.add_argument("--heartbeat-ms", type=int, default=1000, help="heartbeat interval (default 1000)")
    adapter.add_argument("--adapter-id", help="identity kept across reconnects (default: a random one)")
    adapter.add_argument(
        "--max-message-bytes",
        type=_positive_int,
        default=MAX_LINE_BYTES,
        help=f"largest message taken from a server; a larger reply is answered with -32013 (default {MAX_LINE_BYTES})",
    )
    adapter.add_argument(
        "--max-message-items",
        type=_positive_int,
        default=MAX_LINE_CONTAINERS,
        help=f"most JSON objects and arrays in one server message (default {MAX_LINE_CONTAINERS})",
    )
    adapter.add_argument("--url", help="serve the remote Streamable HTTP server at URL instead of a command")
    adapter.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a header sent to --url (repeatable); ${VAR} in VALUE is read from the environment, keep secrets there",
    )
    adapter.add_argument(
        "--timeout", type=float, default=30.0, help="seconds --url may take to begin an answer (default 30)"
    )
    keys_cli.add_key_flags(adapter)
    adapter.set_defaults(func=_adapter)

    http = sub.add_parser(
        "http",
        help="run the Streamable HTTP front against a running daemon (troupe serve starts one with [http] address)",
    )
    http.add_argument("--endpoint", help="the daemon's front endpoint (default: the one discovery finds)")
    http.add_argument("--listen", default="127.0.0.1:8080", help="host:port to serve on (default 127.0.0.1:8080)")
    http.add_argument("--prefix", default="/mcp", help="path prefix: servers are at PREFIX/NAME (default /mcp)")
    http.add_argument("--default-server", help="the server also served at PREFIX itself")
    http.add_argument(
        "--allowed-origin", action="append", default=[], help="an Origin browsers may send (repeat; '*' for any)"
    )
    http.add_argument("--tokens-file", help="bearer tokens, one 'NAME TOKEN' a line; without it no token is asked")
    http.add_argument("--replay-events", type=int, default=1000, help="SSE events kept per session (default 1000)")
    http.add_argument("--replay-bytes", type=int, default=4 << 20, help="bytes of them kept (default 4 MiB)")
    http.add_argument("--pool-size", type=int, default=8, help="warm 2026-07-28 sessions per server (default 8)")
    http.add_argument("--pool-queue", type=int, default=256, help="requests waiting for one (default 256)")
    http.add_argument("--max-body-bytes", type=int, default=4 << 20, help="largest POST body (default 4 MiB)")
    http.add_argument(
        "--sse-poll-after",
        type=float,
        default=0.0,
        help="close a request's SSE stream after this many seconds without its answer, for the client to resume "
        "with Last-Event-ID (SSE polling); 0 = never (default)",
    )
    http.add_argument(
        "--json-within",
        type=float,
        default=0.05,
        help="seconds a legacy POST waits for its answer before starting an SSE stream; an answer that comes "
        "first is sent as JSON (default 0.05; 0 = always SSE)",
    )
    http.add_argument("--exit-with-parent", action="store_true", help="exit when the parent process ends")
    http.add_argument("--log-level", choices=LOG_LEVELS)
    http.add_argument("--log-format", choices=("text", "json"), help="default: text")
    keys_cli.add_key_flags(http)
    http.set_defaults(func=_http)

    call = sub.add_parser("call", help="open a session, initialize, send one request, print its result")
    call.add_argument("server")
    call.add_argument("method")
    call.add_argument("--params", default=None, help="request params as a JSON object")
    call.add_argument("--endpoint", help="the daemon's front endpoint (default: found as docs/configuration.rst says)")
    call.add_argument("--runtime-dir", metavar="DIR", help="the daemon's runtime directory (instead of --endpoint)")
    call.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each reply (default 30)")
    call.add_argument("--log-level", choices=LOG_LEVELS, default="warning")
    keys_cli.add_key_flags(call)
    call.set_defaults(func=_call)

    connect = sub.add_parser(
        "connect", help="be an MCP stdio server for an MCP client: bridge stdin/stdout to a session of SERVER"
    )
    connect.add_argument("server")
    connect.add_argument(
        "--endpoint", help="the daemon's front endpoint (default: found as docs/configuration.rst says)"
    )
    connect.add_argument("--runtime-dir", metavar="DIR", help="the daemon's runtime directory (instead of --endpoint)")
    connect.add_argument(
        "--open-timeout", type=float, default=10.0, help="seconds to wait for the session (default 10)"
    )
    connect.add_argument("--log-level", choices=LOG_LEVELS, default="warning", help="stderr only (default warning)")
    connect.add_argument(
        "--max-line-bytes",
        type=_positive_int,
        default=CONNECT_MAX_LINE_BYTES,
        help=f"longest stdin line taken; a longer request is answered with -32013 (default {CONNECT_MAX_LINE_BYTES})",
    )
    connect.add_argument(
        "--no-server-stderr",
        dest="server_stderr",
        action="store_false",
        help="do not copy the server's stderr to this process's stderr (copied by default)",
    )
    connect.add_argument(
        "--reconnect",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="when the daemon goes away, wait this long for it and take the session back (default 0: exit)",
    )
    keys_cli.add_key_flags(connect)
    connect.set_defaults(func=_connect)

    operator_cli.add_commands(sub)

    status = sub.add_parser("status", help="print the supervision tree: children, states, restarts, failures")
    status.add_argument("--endpoint", help="the daemon's front endpoint (default: the runtime directory's)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    keys_cli.add_key_flags(status)
    status.set_defaults(func=_status)

    fault = sub.add_parser(
        "inject-fault", help="make a supervised child (or a session) raise; needs serve --enable-fault-injection"
    )
    fault.add_argument("target", choices=("janitor", "evictor", "store", "session"))
    fault.add_argument("--sid", help="the session to crash (target session)")
    fault.add_argument(
        "--when",
        choices=("now", "start", "both"),
        default="now",
        help="now: in its next message; start: in on_start of its next incarnation; both (default: now)",
    )
    fault.add_argument("--endpoint", help="the daemon's front endpoint (default: the runtime directory's)")
    keys_cli.add_key_flags(fault)
    fault.set_defaults(func=_inject_fault)

    keys_cli.add_commands(sub)
    return parser


def _limit_type(types: tuple[type, ...]) -> Any:
    if str in types:
        return str
    if bool in types:
        return _boolean
    return int if float not in types else float


def _boolean(text: str) -> bool:
    value = {"true": True, "false": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value


def _method_timeouts(items: list[str]) -> dict[str, float] | None:
    timeouts = {}
    for item in items:
        method, _, seconds = item.partition("=")
        try:
            value = float(seconds)
        except ValueError:
            value = float("nan")
        if not method or not math.isfinite(value) or value <= 0:
            raise ConfigError(
                f"--method-timeout {item!r}: expected METHOD=SECONDS with SECONDS > 0, e.g. tools/call=300"
            )
        timeouts[method] = value
    return timeouts or None


def _setup_logging(level: str, fmt: str = "text") -> None:
    logs.setup(level, fmt)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _fail(message: str, code: int) -> int:
    print(f"troupe: {message}", file=sys.stderr)
    return code


def _serve(args: argparse.Namespace) -> int:
    overrides = {"front": args.front, "back": args.back, "runtime_dir": args.runtime_dir, "log_level": args.log_level}
    overrides |= {"log_format": args.log_format, "metrics_address": args.metrics_address, "audit_log": args.audit_log}
    overrides |= {"events": args.events, "state_dir": args.state_dir, "allow_insecure_tcp": args.allow_insecure_tcp}
    overrides |= {"store": args.store, "orphan_grace": args.orphan_grace}
    overrides |= {name: getattr(args, name) for name in LIMIT_KEYS}
    overrides["http_address"] = args.http_address
    overrides |= {
        name: getattr(args, name) for name in ("fault_injection", "strategy", "intensity", "period", "backoff_initial")
    }
    try:
        overrides["timeouts"] = _method_timeouts(args.method_timeout)
        config = load(args.config, overrides)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    logs.setup(config.log_level, config.log_format)
    try:
        launched = launch(config)  # before the daemon's imports: its adapters start beside them
        from mcp_troupe.actors.daemon.service import Daemon  # the daemon's own imports: serve only

        return Daemon(config, version=version(), launched=launched).run()
    except (DaemonError, RuntimeDirError) as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)


def _adapter(args: argparse.Namespace) -> int:
    from mcp_troupe.transport.adapter.runner import Adapter

    command = args.command
    if bool(command) == bool(args.url):
        return _fail(
            "adapter needs either the server command after -- (troupe adapter echo -- python3 server.py) "
            "or --url (troupe adapter search --url https://host/mcp), not both",
            EXIT_USAGE,
        )
    try:
        endpoint = args.endpoint or discovery.find(BACK_SOCKET)
        credentials = Credentials.resolve()
        upstream = _upstream(args) if args.url else None
    except (RuntimeDirError, KeyFileError, ValueError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    adapter = Adapter(
        args.name,
        command,
        endpoint,
        capacity=args.capacity,
        stop_timeout=args.stop_timeout,
        term_timeout=args.term_timeout,
        cwd=args.cwd,
        exit_with_parent=args.exit_with_parent,
        orphan_grace=args.orphan_grace,
        heartbeat_ms=args.heartbeat_ms,
        adapter_id=args.adapter_id,
        max_message_bytes=args.max_message_bytes,
        max_message_items=args.max_message_items,
        credentials=credentials,
        upstream=upstream,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _n, _f: adapter.request_stop())
    return adapter.run()


def _upstream(args: argparse.Namespace) -> Callable[[Callable[[Any], object]], Any]:
    """What makes the adapter's `Upstream`; ValueError (CredentialsError) saying what is wrong with the headers."""
    from mcp_troupe.transport.upstream.credentials import StaticHeaders
    from mcp_troupe.transport.upstream.loop import Upstream

    templates = {}
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep:
            raise ValueError(f"--header {name!r}: write it as 'Name: value'")
        templates[name.strip()] = value.strip()
    headers = StaticHeaders(templates, os.environ)
    timeout, max_bytes = args.timeout, args.max_message_bytes
    return lambda report: Upstream(args.name, args.url, headers, report, timeout=timeout, max_message_bytes=max_bytes)


def _http(args: argparse.Namespace) -> int:
    try:
        from mcp_troupe.transport.http import program
        from mcp_troupe.transport.http.app import AppOptions
        from mcp_troupe.transport.http.rules import TokenFileError, load_tokens
        from mcp_troupe.transport.http.sessions import FrontOptions
    except ImportError as exc:
        return _fail(f"the HTTP front needs {exc.name}: pip install 'mcp-troupe[http]'", EXIT_USAGE)
    try:
        host, port = program.split_address(args.listen)
        tokens = load_tokens(Path(args.tokens_file) if args.tokens_file else None)
        endpoint = args.endpoint or discovery.find()
        credentials = Credentials.resolve()
    except (ValueError, TokenFileError, RuntimeDirError, KeyFileError, discovery.NotFound) as exc:
        return _fail(str(exc), EXIT_USAGE)
    for name in ("replay_events", "replay_bytes", "pool_size", "pool_queue", "max_body_bytes"):
        if getattr(args, name) < 1:
            return _fail(f"--{name.replace('_', '-')} must be at least 1", EXIT_USAGE)
    settings = program.FrontSettings(
        endpoint=endpoint,
        host=host,
        port=port,
        app=AppOptions(
            prefix="/" + args.prefix.strip("/"),
            default_server=args.default_server,
            allowed_origins=tuple(args.allowed_origin),
            loopback=program.is_loopback(host),
            tokens=tokens,
            max_body_bytes=args.max_body_bytes,
            sse_poll_after=args.sse_poll_after,
            json_within=args.json_within,
        ),
        front=FrontOptions(
            replay_events=args.replay_events,
            replay_bytes=args.replay_bytes,
            pool_size=args.pool_size,
            pool_queue=args.pool_queue,
        ),
        exit_with_parent=args.exit_with_parent,
    )
    return program.run(settings, credentials)


def _call(args: argparse.Namespace) -> int:
    try:
        params = json.loads(args.params) if args.params is not None else None
    except json.JSONDecodeError as exc:
        return _fail(f"--params is not valid JSON: {exc}", EXIT_USAGE)
    if params is not None and not isinstance(params, dict):
        return _fail('--params must be a JSON object, e.g. \'{"name": "echo"}\'', EXIT_USAGE)
    server_stderr: list[str] = []
    try:
        with Client(_front(args), timeout=args.timeout) as client:
            result = _one_request(client, args.server, args.method, params, server_stderr)
    except RequestError as exc:
        what = "initialize" if isinstance(exc, InitializeFailed) else args.method
        detail = f" data={json.dumps(exc.data)}" if exc.data is not None else ""
        for line in server_stderr[-STDERR_SHOWN:]:
            print(f"troupe: server stderr: {line}", file=sys.stderr)
        return _fail(f"{what} failed: error {exc.code}: {exc.message}{detail}", EXIT_REQUEST_FAILED)
    except (DaemonUnavailable, RuntimeDirError) as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    except FrameRefused as exc:
        return _fail(f"the daemon refused: {exc}", EXIT_UNAVAILABLE)
    except TroupeError as exc:
        return _fail(str(exc), EXIT_REQUEST_FAILED)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    if isinstance(result, dict) and result.get("isError") is True:
        return _fail(f"{args.method} returned an error result (isError: true)", EXIT_REQUEST_FAILED)
    return EXIT_OK


def _front(args: argparse.Namespace) -> str | None:
    """The front endpoint the command was given (``--endpoint``, or ``--runtime-dir``'s), or None to look for it."""
    if args.endpoint or not args.runtime_dir:
        endpoint: str | None = args.endpoint
        return endpoint
    return ipc_endpoint(Path(args.runtime_dir), FRONT_SOCKET)


def _control(endpoint: str | None, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    with Client(endpoint, timeout=10) as client:
        return client.control(op, args)


def _connect(args: argparse.Namespace) -> int:
    from mcp_troupe.transport.bridge.stdio import StdioBridge

    try:
        bridge = StdioBridge(
            args.server,
            _front(args),
            open_timeout=args.open_timeout,
            server_stderr=args.server_stderr,
            max_line_bytes=args.max_line_bytes,
            credentials=Credentials.resolve(),
            reconnect=args.reconnect,
        )
    except RuntimeDirError as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    except KeyFileError as exc:
        return _fail(str(exc), EXIT_USAGE)
    return bridge.run()


def _status(args: argparse.Namespace) -> int:
    try:
        result = _control(args.endpoint, "status")
    except TroupeError as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    if args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    print(format_tree(result))
    return EXIT_OK


def format_tree(status: dict[str, Any]) -> str:
    """The supervision tree as text, one line per child."""
    tree = status["supervisor"]
    lines = [f"supervisor  {tree['strategy']}, intensity {tree['intensity']} in {tree['period']:g}s"]
    if tree.get("escalated"):
        lines.append(f"  ESCALATED: {tree['escalated']}")
    lines.append(f"  {'CHILD':<10} {'STATE':<11} {'RESTART':<10} {'RESTARTS':>8}  LAST FAILURE")
    for child in tree["children"]:
        failure = child["last_failure"] or "-"
        lines.append(
            f"  {child['id']:<10} {child['state']:<11} {child['restart']:<10} {child['restarts']:>8}  {failure}"
        )
    lines.append(f"sessions    {status['sessions']} open")
    return "\n".join(lines)


def _inject_fault(args: argparse.Namespace) -> int:
    if args.target == "session" and not args.sid:
        return _fail("inject-fault session needs --sid SID", EXIT_USAGE)
    try:
        result = _control(args.endpoint, "inject_fault", {"target": args.target, "when": args.when, "sid": args.sid})
    except FrameRefused as exc:
        return _fail(str(exc), EXIT_REQUEST_FAILED)
    except TroupeError as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    print(json.dumps(result))
    return EXIT_OK


class InitializeFailed(RequestError):
    """The handshake failed, before the request itself was sent."""


STDERR_SHOWN = 20
"""Last lines of the server's stderr that ``troupe call`` shows when the request fails."""


def _one_request(
    client: Client, server: str, method: str, params: dict[str, Any] | None, server_stderr: list[str]
) -> Any:
    session = client.open(server, stderr=True)
    try:
        try:
            session.initialize(client_info={"name": "troupe-call", "version": version()})
        except RequestError as exc:
            raise InitializeFailed(exc.code, exc.message, exc.data) from None
        return session.request(method, params)
    finally:
        server_stderr.extend(session.stderr)
        if not session.closed:
            session.close()
