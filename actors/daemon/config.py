"""Daemon configuration: a TOML file (``tomllib``), defaults, CLI overrides.

Every key, its type and its default is listed in ``DAEMON_KEYS`` and
``SERVER_KEYS`` below and documented in ``docs/configuration.rst``. Unknown
keys and wrong types are refused with a message naming the key and the
accepted form, rather than ignored.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mcp_troupe.actors.core.options import ON_EXIT_POLICIES, Limits
from mcp_troupe.actors.core.supervision import Strategy, SupervisorPolicy
from mcp_troupe.transport.runtime import (
    BACK_SOCKET,
    EVENTS_SOCKET,
    FRONT_SOCKET,
    ipc_endpoint,
    runtime_dir,
    state_dir,
)
from mcp_troupe.transport.upstream.credentials import CredentialsError, check_header

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ConfigError(ValueError):
    """The configuration cannot be used; the message says what to change."""


@dataclass(frozen=True)
class ServerConfig:
    """One MCP server the daemon serves through adapters it starts."""

    name: str
    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    capacity: int = 0
    """Sessions one adapter takes at most; 0 means no limit."""
    adapters: int = 1
    """Adapter processes to start for this server (sessions go to the least loaded)."""
    stop_timeout: float = 2.0
    """Seconds a server gets to exit after its stdin closes, before SIGTERM."""
    term_timeout: float = 2.0
    """Seconds a server gets after SIGTERM, before SIGKILL."""
    on_exit: str = "fail"
    """When a session's server process ends: ``fail`` the session, or ``restart`` the process."""
    max_restarts: int = 3
    """Server restarts per session (``on_exit = "restart"``) before the session fails anyway."""
    passivate: bool = True
    """Its idle sessions may be passivated (``[limits] passivate_after``); false keeps them active, for a server
    whose state a new process would not have."""
    pass_env: tuple[str, ...] = ()
    """Environment variables a session may bring for its own server process (``open`` ``env``, sent by
    ``troupe connect`` from its environment); none by default."""
    url: tuple[str, ...] = ()
    """A remote server's Streamable HTTP endpoints (instead of ``command``); each gets ``adapters`` adapters."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Headers sent to ``url``: values are templates, ``${NAME}`` read from the adapter's environment."""
    timeout: float = 30.0
    """Seconds ``url`` may take to begin an answer (to connect, and to send a JSON answer whole)."""

    @property
    def adapter_urls(self) -> tuple[str | None, ...]:
        """The upstream of each adapter process to start (None: a stdio server's adapter)."""
        return tuple(u for u in self.url for _ in range(self.adapters)) if self.url else (None,) * self.adapters


@dataclass(frozen=True)
class HttpConfig:
    """``[http]``: the Streamable HTTP front (docs/http.rst), off unless ``address`` is set."""

    address: str | None = None
    """``host:port`` the front serves on, e.g. ``127.0.0.1:8080``; None: no HTTP front."""
    prefix: str = "/mcp"
    """Path prefix: server NAME is at ``PREFIX/NAME``."""
    default_server: str | None = None
    """A server also served at ``PREFIX`` itself."""
    allowed_origins: tuple[str, ...] = ()
    """``Origin`` values browsers may send (``scheme://host[:port]``, or ``*``); none: loopback origins only."""
    tokens_file: Path | None = None
    """Bearer tokens, one ``NAME TOKEN`` a line; None: no token is asked for."""
    replay_events: int = 1000
    """SSE events kept per session for clients that reconnect with ``Last-Event-ID``."""
    replay_bytes: int = 4 * 1024 * 1024
    """Bytes of those events kept per session."""
    pool_size: int = 8
    """Warm sessions per server that serve 2026-07-28 requests."""
    pool_queue: int = 256
    """2026-07-28 requests per server that may wait for a free pooled session; beyond, 503."""
    max_body_bytes: int | None = None
    """Largest POST body; None: ``[daemon] max_frame_bytes``."""
    json_within: float = 0.05
    """Seconds a legacy POST waits for its answer before starting an SSE stream; 0: always SSE."""
    sse_poll_after: float = 0.0
    """Seconds a POST's SSE stream stays open without its answer before the front closes it for the client
    to resume (SSE polling, SEP-1699); 0: never."""


@dataclass(frozen=True)
class SecurityConfig:
    """``[security]``: who may connect on tcp endpoints (docs/security.rst)."""

    clients_dir: Path | None = None
    """Public keys of clients let in on the front socket; default ``<state_dir>/clients``."""
    operators_dir: Path | None = None
    """Public keys of operators (acting control operations); default ``<state_dir>/operators``."""
    adapters_dir: Path | None = None
    """Public keys of adapters let in on the back socket (``adapters_dir/SERVER/`` for one server only);
    default ``<state_dir>/adapters``."""
    allow_insecure_tcp: bool = False
    """Serve a tcp endpoint without CurveZMQ when the daemon has no key pair (anyone who reaches the
    port is let in, with no operator rights); refused by default."""


@dataclass(frozen=True)
class DaemonConfig:
    runtime_dir: Path
    front: str
    """Endpoint clients connect to."""
    back: str
    """Endpoint adapters connect to."""
    servers: Mapping[str, ServerConfig]
    max_frame_bytes: int = 4 * 1024 * 1024
    """Largest frame a client may send; up to 4x this a larger one is refused with an error,
    beyond that its connection is cut before the frame is read."""
    max_frame_items: int = 50_000
    """Elements (map entries and array items, all levels) one client frame may hold."""
    max_server_frame_bytes: int = 32 * 1024 * 1024
    """Largest message a server may send (a tool result, a resource); a larger one is answered,
    to whoever waits for it, with JSON-RPC error -32013 naming this limit."""
    max_server_frame_items: int = 1_000_000
    """Elements one server message may hold (the adapter counts its JSON objects and arrays)."""
    startup_timeout: float = 15.0
    """Seconds to wait for the configured adapters to register before serving anyway."""
    shutdown_timeout: float = 10.0
    """Seconds a clean shutdown waits for sessions and adapters before forcing them."""
    heartbeat_ms: int = 1000
    client_timeout: float = 5.0
    """Seconds a client connection may send nothing, not even a ZMTP heartbeat, before it is
    closed and its sessions with it; a client process that exits is noticed at once."""
    max_client_connections: int = 4096
    """Client connections the front socket takes at once; more are refused in the handshake."""
    adapter_timeout: float = 5.0
    """Seconds without a frame or heartbeat from an adapter before its sessions are handled as lost."""
    respawn_timeout: float = 15.0
    """Seconds a restarting session waits for an adapter of its server to (re)register."""
    send_backlog_bytes: int = 64 * 1024 * 1024
    """Bytes of frames the daemon holds for one peer that is not reading, beyond its socket queue;
    beyond, the peer is given up on (a client's sessions are closed, reason ``client_not_reading``)."""
    send_backlog_total: int = 256 * 1024 * 1024
    """Bytes of frames the daemon holds for all such peers together; beyond, the one holding most is given up on."""
    log_level: str = "info"
    gil_switch_interval: float = 0.005
    """Seconds between the interpreter's GIL hand-offs (``sys.setswitchinterval``);
    CPython's own default. Lower values were tried (docs/performance.rst): one short
    run looked faster, longer paired runs showed no difference beyond noise."""
    log_format: str = "text"
    """``text`` or ``json`` (one JSON object per line, with the session id as a field)."""
    events: str = ""
    """Endpoint of the event stream (PUB); empty: ``ipc://<runtime_dir>/events.sock``."""
    metrics_address: str | None = None
    """``host:port`` of the Prometheus endpoint; off when unset."""
    audit_log: str | None = None
    """Path of the append-only JSON-lines audit log; off when unset."""
    limits: Limits = field(default_factory=Limits)
    supervisor: SupervisorPolicy = field(default_factory=SupervisorPolicy)
    child_shutdown_timeout: float = 5.0
    """Seconds the janitor and evictor get to stop (OTP's worker default)."""
    fault_injection: bool = False
    """Allow the ``inject_fault`` control operation."""
    discoverable: bool = True
    """Write ``~/.local/state/troupe/daemon.json`` (where this daemon serves) while it runs, so that
    clients given no endpoint find it in any environment (see `mcp_troupe.transport.discovery`)."""
    adapter_intensity: int = 3
    """Restarts of one server's adapter processes allowed within ``adapter_period``."""
    adapter_period: float = 60.0
    state_dir: Path | None = None
    """Where the daemon keeps its key pair (``troupe keys generate``) and, by default, the keys it lets in;
    None: `mcp_troupe.transport.runtime.state_dir` (`load` fills it in)."""
    store: str = "sqlite"
    """Where session records are kept across restarts: ``sqlite`` (``<state_dir>/sessions.sqlite3``) or ``none``."""
    store_queue: int = 100_000
    """Sessions whose record may wait to be written at once; beyond, changes are counted and dropped."""
    store_batch: int = 1000
    """Record changes written in one transaction (the store writes every tick, 0.1 s)."""
    orphan_grace: float = 60.0
    """Seconds an adapter keeps its server processes after its daemon is gone, for the next daemon to take them
    back (with their stored sessions); 0: they stop with the daemon."""
    security: SecurityConfig = field(default_factory=SecurityConfig)
    http: HttpConfig = field(default_factory=HttpConfig)


def example_server() -> ServerConfig:
    """The bundled example MCP server, served as ``example`` by default."""
    return ServerConfig(name="example", command=(sys.executable, "-m", "mcp_troupe.examples.server"))


EXAMPLE_NEEDS = "the example server needs the MCP Python SDK, which is not installed: pip install 'mcp-troupe[example]'"


def example_unavailable(server: ServerConfig) -> str | None:
    """Why ``server``, if it is the bundled example, cannot start here (the SDK is an extra), else None."""
    if server.command != example_server().command:
        return None
    try:
        if importlib.util.find_spec("mcp") is not None:
            return None
    except ImportError:
        pass
    return EXAMPLE_NEEDS


# key -> (accepted types, description of the accepted form)
DAEMON_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "runtime_dir": ((str,), "a directory path"),
    "state_dir": ((str,), "a directory path"),
    "front": ((str,), "a ZMQ endpoint such as 'ipc:///run/troupe/front.sock' or 'tcp://127.0.0.1:5555'"),
    "back": ((str,), "a ZMQ endpoint"),
    "max_frame_bytes": ((int,), "a positive integer (bytes)"),
    "max_frame_items": ((int,), "a positive integer (map entries and array items in one frame)"),
    "max_server_frame_bytes": ((int,), "a positive integer (bytes)"),
    "max_server_frame_items": ((int,), "a positive integer"),
    "client_timeout": ((int, float), "seconds > 0"),
    "max_client_connections": ((int,), "a positive integer"),
    "startup_timeout": ((int, float), "seconds, >= 0"),
    "shutdown_timeout": ((int, float), "seconds, >= 0"),
    "heartbeat_ms": ((int,), "a positive integer (milliseconds)"),
    "adapter_timeout": ((int, float), "seconds > 0"),
    "respawn_timeout": ((int, float), "seconds > 0"),
    "send_backlog_bytes": ((int,), "a positive integer (bytes)"),
    "send_backlog_total": ((int,), "a positive integer (bytes)"),
    "log_level": ((str,), "one of debug, info, warning, error"),
    "log_format": ((str,), "text or json"),
    "gil_switch_interval": ((int, float), "seconds > 0, e.g. 0.0002"),
    "events": ((str,), "a ZMQ endpoint for the event stream (PUB)"),
    "metrics_address": ((str,), "host:port, e.g. '127.0.0.1:9464'"),
    "audit_log": ((str,), "a file path"),
    "fault_injection": ((bool,), "true or false"),
    "discoverable": ((bool,), "true or false"),
    "store": ((str,), "sqlite or none"),
    "store_queue": ((int,), "a positive integer (sessions)"),
    "store_batch": ((int,), "a positive integer (records per transaction)"),
    "orphan_grace": ((int, float), "seconds, >= 0"),
}
SECURITY_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "clients_dir": ((str,), "a directory of client public keys (*.key)"),
    "operators_dir": ((str,), "a directory of operator public keys (*.key)"),
    "adapters_dir": ((str,), "a directory of adapter public keys (*.key; SERVER/*.key for one server)"),
    "allow_insecure_tcp": ((bool,), "true or false"),
}
HTTP_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "address": ((str,), "host:port, e.g. '127.0.0.1:8080'"),
    "prefix": ((str,), "a URL path such as '/mcp'"),
    "default_server": ((str,), "the name of a configured server"),
    "allowed_origins": ((list,), "a list of origins such as ['https://app.example.com'], or ['*']"),
    "tokens_file": ((str,), "a file path"),
    "replay_events": ((int,), "a positive integer"),
    "replay_bytes": ((int,), "a positive integer (bytes)"),
    "pool_size": ((int,), "a positive integer"),
    "pool_queue": ((int,), "a positive integer"),
    "max_body_bytes": ((int,), "a positive integer (bytes)"),
    "sse_poll_after": ((int, float), "seconds >= 0 (0: never)"),
    "json_within": ((int, float), "seconds >= 0 (0: always SSE)"),
}
SUPERVISOR_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "strategy": ((str,), "one of one_for_one, one_for_all, rest_for_one"),
    "intensity": ((int,), "an integer >= 0: restarts allowed within period"),
    "period": ((int, float), "seconds > 0"),
    "backoff_initial": ((int, float), "seconds >= 0 (0: restart at once)"),
    "backoff_max": ((int, float), "seconds >= 0"),
    "child_shutdown_timeout": ((int, float), "seconds >= 0"),
    "adapter_intensity": ((int,), "an integer >= 0: adapter process restarts allowed within adapter_period"),
    "adapter_period": ((int, float), "seconds > 0"),
}
SERVER_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "command": ((list,), "a non-empty list of strings, e.g. ['python3', '-m', 'my_server']"),
    "env": ((dict,), "a table of string values"),
    "cwd": ((str,), "a directory path"),
    "capacity": ((int,), "an integer >= 0 (0: no limit)"),
    "adapters": ((int,), "an integer >= 1"),
    "stop_timeout": ((int, float), "seconds, >= 0"),
    "term_timeout": ((int, float), "seconds, >= 0"),
    "on_exit": ((str,), "fail or restart"),
    "max_restarts": ((int,), "an integer >= 0"),
    "passivate": ((bool,), "true or false"),
    "pass_env": ((list,), "a list of environment variable names, e.g. ['GITHUB_TOKEN']"),
    "url": ((str, list), "an http(s) URL, or a list of them (replicas), e.g. 'https://host/mcp'"),
    "headers": ((dict,), "a table of header values, e.g. { Authorization = 'Bearer ${SEARCH_TOKEN}' }"),
    "timeout": ((int, float), "seconds > 0"),
}


def _limit_key(default: object) -> tuple[tuple[type, ...], str]:
    if isinstance(default, bool):
        return ((bool,), "true or false")
    if isinstance(default, int):
        return ((int,), "an integer >= 0")
    if isinstance(default, str):
        return ((str,), f"one of {', '.join(SESSION_LIMIT_POLICIES)}")
    return ((int, float), "a number >= 0 (seconds or per second)")


SESSION_LIMIT_POLICIES = ("evict", "refuse")
STORES = ("sqlite", "none")
LIMIT_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    name: _limit_key(default) for name, default in vars(Limits()).items() if name != "timeouts"
}
"""Keys of ``[limits]``: every field of `mcp_troupe.actors.core.options.Limits` (``timeouts`` is a sub-table)."""
LOG_LEVELS = ("debug", "info", "warning", "error")


def load(path: Path | None, overrides: Mapping[str, Any] | None = None) -> DaemonConfig:
    """Build the configuration: defaults, then the file (if any), then ``overrides``.

    With no file the daemon serves the bundled example server as ``example``.
    """
    daemon: dict[str, Any] = {}
    supervisor: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    security: dict[str, Any] = {}
    http: dict[str, Any] = {}
    servers: dict[str, ServerConfig] | None = None
    if path is not None:
        data = _read(path)
        unknown = set(data) - {"daemon", "servers", "limits", "supervisor", "security", "http"}
        if unknown:
            raise ConfigError(
                f"{path}: unknown top-level table(s) {sorted(unknown)}; "
                "use [daemon], [limits], [supervisor], [security], [http] and [servers.NAME]"
            )
        http = _checked(data.get("http", {}), HTTP_KEYS, f"{path}: [http]")
        daemon = _checked(data.get("daemon", {}), DAEMON_KEYS, f"{path}: [daemon]")
        security = _checked(data.get("security", {}), SECURITY_KEYS, f"{path}: [security]")
        supervisor = _checked(data.get("supervisor", {}), SUPERVISOR_KEYS, f"{path}: [supervisor]")
        limits = _limits(data.get("limits", {}), path)
        servers = _servers(data.get("servers", {}), path)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "timeouts":
            limits["timeouts"] = {**limits.get("timeouts", {}), **value}
        elif key in LIMIT_KEYS:
            limits[key] = value
        elif key in SUPERVISOR_KEYS:
            supervisor[key] = value
        elif key in SECURITY_KEYS:
            security[key] = value
        elif key.startswith("http_") and key.removeprefix("http_") in HTTP_KEYS:
            http[key.removeprefix("http_")] = value
        else:
            daemon[key] = value
    daemon["limits"] = _build_limits(limits)
    for key in ("child_shutdown_timeout", "adapter_intensity", "adapter_period"):
        if key in supervisor:
            daemon[key] = supervisor.pop(key)
    daemon["supervisor"] = _build_policy(supervisor)
    daemon["state_dir"] = Path(daemon["state_dir"]).expanduser() if daemon.get("state_dir") else state_dir()
    daemon["security"] = _build_security(security, daemon["state_dir"])
    chosen = servers if servers is not None else {"example": example_server()}
    daemon["http"] = _build_http(http, chosen)
    return _build(daemon, chosen)


def _build_http(values: dict[str, Any], servers: Mapping[str, ServerConfig]) -> HttpConfig:
    from mcp_troupe.transport.http.rules import TokenFileError, load_tokens, split_address

    where = "[http]"
    if values.get("address") is not None:
        try:
            split_address(values["address"])
        except ValueError as exc:
            raise ConfigError(f"{where} address: {exc}") from None
    for key in ("replay_events", "replay_bytes", "pool_size", "pool_queue", "max_body_bytes"):
        if key in values and values[key] < 1:
            raise ConfigError(f"{where} {key} must be at least 1")
    for key in ("sse_poll_after", "json_within"):
        if values.get(key, 0) < 0:
            raise ConfigError(f"{where} {key} must be >= 0 seconds")
    default = values.get("default_server")
    if default is not None and default not in servers:
        raise ConfigError(f"{where} default_server {default!r} is not a configured server ({', '.join(servers)})")
    origins = values.get("allowed_origins", [])
    if not all(isinstance(o, str) and o for o in origins):
        raise ConfigError(f"{where} allowed_origins must be a list of origins such as 'https://app.example.com'")
    prefix = "/" + str(values.get("prefix", "/mcp")).strip("/")
    tokens = Path(values["tokens_file"]).expanduser() if values.get("tokens_file") else None
    try:
        load_tokens(tokens)
    except TokenFileError as exc:
        raise ConfigError(f"{where} tokens_file: {exc}") from None
    fields = {k: v for k, v in values.items() if k not in ("prefix", "tokens_file", "allowed_origins")}
    return HttpConfig(**fields, prefix=prefix, tokens_file=tokens, allowed_origins=tuple(origins))


def _build_security(values: dict[str, Any], state: Path) -> SecurityConfig:
    dirs = {
        name: Path(values[name]).expanduser() if values.get(name) else state / name.removesuffix("_dir")
        for name in ("clients_dir", "operators_dir", "adapters_dir")
    }
    return SecurityConfig(**dirs, allow_insecure_tcp=bool(values.get("allow_insecure_tcp", False)))


def _limits(table: object, path: Path) -> dict[str, Any]:
    table = dict(table) if isinstance(table, dict) else table
    timeouts = table.pop("timeouts", {}) if isinstance(table, dict) else {}
    values = _checked(table, LIMIT_KEYS, f"{path}: [limits]")
    if not isinstance(timeouts, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in timeouts.values()
    ):
        raise ConfigError(
            f'{path}: [limits.timeouts] maps method names to seconds >= 0 (0: no timeout), e.g. "tools/call" = 300'
        )
    values["timeouts"] = timeouts
    return values


def _build_policy(values: dict[str, Any]) -> SupervisorPolicy:
    strategies = [s.value for s in Strategy]
    if values.get("strategy", "one_for_one") not in strategies:
        raise ConfigError(f"supervisor: strategy must be one of {', '.join(strategies)}")
    if "strategy" in values:
        values = {**values, "strategy": Strategy(values["strategy"])}
    policy = replace(SupervisorPolicy(), **values)
    if policy.intensity < 0 or policy.period <= 0 or policy.backoff_initial < 0 or policy.backoff_max < 0:
        raise ConfigError("supervisor: intensity >= 0, period > 0, backoff_initial and backoff_max >= 0")
    return policy


def _build_limits(values: dict[str, Any]) -> Limits:
    limits = replace(Limits(), **values)
    if limits.on_session_limit not in SESSION_LIMIT_POLICIES:
        raise ConfigError(f"limits: on_session_limit must be one of {', '.join(SESSION_LIMIT_POLICIES)}")
    for name in LIMIT_KEYS:
        if name != "on_session_limit" and getattr(limits, name) < 0:
            raise ConfigError(f"limits: {name} must be >= 0")

    if not 0 < limits.soft_limit_ratio <= 1:
        raise ConfigError("limits: soft_limit_ratio must be in (0, 1]")
    for name in (
        "max_pending_per_session",
        "max_pending_total",
        "max_sessions",
        "rate_burst",
        "open_burst",
        "open_burst_total",
        "reattach_buffer",
    ):
        if getattr(limits, name) < 1:
            raise ConfigError(f"limits: {name} must be >= 1")
    return limits


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def _checked(table: object, keys: dict[str, tuple[tuple[type, ...], str]], where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    for key, value in table.items():
        if key not in keys:
            raise ConfigError(f"{where}: unknown key {key!r}; accepted keys: {', '.join(sorted(keys))}")
        types, form = keys[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ConfigError(f"{where}: {key} = {value!r} is not valid; expected {form}")
    return dict(table)


def _servers(table: object, path: Path) -> dict[str, ServerConfig]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [servers] must hold one table per server, e.g. [servers.example]")
    servers = {}
    for name, spec in table.items():
        where = f"{path}: [servers.{name}]"
        values = _checked(spec, SERVER_KEYS, where)
        command = values.pop("command", None)
        urls = _urls(values.pop("url", None), command, where)
        if not urls and (not command or not all(isinstance(part, str) for part in command)):
            raise ConfigError(f"{where}: command must be {SERVER_KEYS['command'][1]} (or url, for a remote server)")
        _check_headers(values.get("headers", {}), where)
        env = values.get("env", {})
        if not all(isinstance(v, str) for v in env.values()):
            raise ConfigError(f"{where}: env values must be strings")
        pass_env = values.pop("pass_env", [])
        if not all(isinstance(n, str) and ENV_NAME.fullmatch(n) and not n.startswith("TROUPE_") for n in pass_env):
            raise ConfigError(
                f"{where}: pass_env must be {SERVER_KEYS['pass_env'][1]} (letters, digits, _; no TROUPE_)"
            )
        if urls and (pass_env or values.get("cwd")):
            raise ConfigError(f"{where}: pass_env and cwd are for a command's process; a url server has none")
        server = ServerConfig(name=name, command=tuple(command or ()), pass_env=tuple(pass_env), url=urls, **values)
        _check_server(server, where)
        servers[name] = server
    return servers


def _urls(value: object, command: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if command is not None:
        raise ConfigError(f"{where}: give either command (a stdio server) or url (a remote one), not both")
    urls = [value] if isinstance(value, str) else value
    if not isinstance(urls, list) or not urls:
        raise ConfigError(f"{where}: url must be {SERVER_KEYS['url'][1]}")
    for url in urls:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
            raise ConfigError(
                f"{where}: url {url!r} is not an http:// or https:// URL with a host (and no user:password@; "
                "credentials go in headers)"
            )
    return tuple(urls)


def _check_headers(headers: dict[str, Any], where: str) -> None:
    for name, value in headers.items():
        if not isinstance(value, str):
            raise ConfigError(f"{where}: headers.{name} must be a string")
        try:
            check_header(name, value)
        except CredentialsError as exc:
            raise ConfigError(f"{where}: headers: {exc}") from None


def _check_server(server: ServerConfig, where: str) -> None:
    if server.timeout <= 0:
        raise ConfigError(f"{where}: timeout must be > 0 seconds")
    if server.headers and not server.url:
        raise ConfigError(f"{where}: headers are sent to a url server; this one runs a command")
    if server.capacity < 0:
        raise ConfigError(f"{where}: capacity must be >= 0 (0: no limit)")
    if server.adapters < 1:
        raise ConfigError(f"{where}: adapters must be >= 1")
    if server.stop_timeout < 0 or server.term_timeout < 0:
        raise ConfigError(f"{where}: stop_timeout and term_timeout must be >= 0")
    if server.on_exit not in ON_EXIT_POLICIES:
        raise ConfigError(f"{where}: on_exit must be one of {', '.join(ON_EXIT_POLICIES)}")
    if server.max_restarts < 0:
        raise ConfigError(f"{where}: max_restarts must be >= 0")


def _build(daemon: dict[str, Any], servers: dict[str, ServerConfig]) -> DaemonConfig:
    directory = Path(daemon.pop("runtime_dir")) if daemon.get("runtime_dir") else runtime_dir()
    front = daemon.pop("front", None) or ipc_endpoint(directory, FRONT_SOCKET)
    daemon["events"] = daemon.get("events") or ipc_endpoint(directory, EVENTS_SOCKET)
    back = daemon.pop("back", None) or ipc_endpoint(directory, BACK_SOCKET)
    config = replace(DaemonConfig(directory, front, back, servers), **daemon)
    if config.max_frame_bytes <= 0 or config.heartbeat_ms <= 0:
        raise ConfigError("max_frame_bytes and heartbeat_ms must be positive")
    if config.startup_timeout < 0 or config.shutdown_timeout < 0:
        raise ConfigError("startup_timeout and shutdown_timeout must be >= 0")
    if config.adapter_timeout <= 0 or config.respawn_timeout <= 0 or config.child_shutdown_timeout < 0:
        raise ConfigError("adapter_timeout and respawn_timeout must be > 0, child_shutdown_timeout >= 0")
    if config.send_backlog_bytes <= 0 or config.send_backlog_total < config.send_backlog_bytes:
        raise ConfigError("send_backlog_bytes must be > 0 and send_backlog_total at least send_backlog_bytes")
    if config.max_frame_items <= 0 or config.client_timeout <= 0 or config.max_client_connections <= 0:
        raise ConfigError("max_frame_items, client_timeout and max_client_connections must be > 0")
    if config.max_server_frame_bytes <= 0 or config.max_server_frame_items <= 0:
        raise ConfigError("max_server_frame_bytes and max_server_frame_items must be > 0")
    if config.send_backlog_bytes < config.max_server_frame_bytes:
        raise ConfigError(
            "send_backlog_bytes must be at least max_server_frame_bytes: a peer must be able to wait for one"
        )
    if (
        config.adapter_timeout * 1000 < 2 * config.heartbeat_ms
        or config.client_timeout * 1000 < 2 * config.heartbeat_ms
    ):
        raise ConfigError("adapter_timeout and client_timeout must be at least two heartbeats (heartbeat_ms) long")
    if config.adapter_intensity < 0 or config.adapter_period <= 0:
        raise ConfigError("supervisor: adapter_intensity must be >= 0 and adapter_period > 0")
    if not config.gil_switch_interval > 0:
        raise ConfigError("gil_switch_interval must be > 0 seconds")
    if config.store not in STORES:
        raise ConfigError(f"store {config.store!r} is not one of {', '.join(STORES)}")
    if config.store_queue <= 0 or config.store_batch <= 0:
        raise ConfigError("store_queue and store_batch must be > 0")
    if config.orphan_grace < 0:
        raise ConfigError("orphan_grace must be >= 0 (seconds; 0: server processes stop with the daemon)")
    if config.log_format not in ("text", "json"):
        raise ConfigError(f"log_format {config.log_format!r} is not text or json")
    if config.metrics_address is not None and not config.metrics_address.rpartition(":")[2].isdigit():
        raise ConfigError(f"metrics_address {config.metrics_address!r} must be host:port, e.g. 127.0.0.1:9464")
    if config.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level {config.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    return config
