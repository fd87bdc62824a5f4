"""CurveZMQ keys: the daemon's key pair, the directories of keys it lets in, a peer's credentials.

Key files are ZeroMQ certificates (``zmq.auth.create_certificates`` writes
them; czmq and every ZeroMQ binding read them): ``NAME.key`` holds a public
key, ``NAME.key_secret`` the public and the secret key. A directory of
allowed keys holds one ``NAME.key`` a key; ``NAME`` is how the key's holder
appears in logs, audit records and ``sessions.list``.

Who may do what (docs/security.rst):

* ``clients_dir``: keys allowed on the front socket, as plain clients;
* ``operators_dir``: keys allowed on the front socket with operator rights
  (acting control operations);
* ``adapters_dir``: keys allowed on the back socket. A key directly in it may
  register an adapter for any server; a key in ``adapters_dir/SERVER/`` only
  for server ``SERVER``.

The daemon answers ZAP itself (`mcp_troupe.transport.hub.zap`), so it uses
``zmq.auth`` for its certificate files, not for its authenticator threads.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import zmq
import zmq.auth
from zmq.utils import z85

DAEMON_KEY: Final = "daemon"
"""``<state_dir>/daemon.key`` and ``daemon.key_secret``: the daemon's own key pair."""
ANY_SERVER: Final = "*"
OPERATOR: Final = "operator"
VOUCH: Final = "vouch"
"""An adapter's right to vouch for its messages (an ``mcp`` frame's ``checked``), sparing the daemon its
JSON walk of them: only local connections of the daemon's own user (or root), who could change the
daemon's process anyway, have it."""
MAX_KEYS: Final = 100_000
"""Keys read from one directory at most (a directory holding more is refused)."""
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")
ENV_SERVER_KEY: Final = "TROUPE_SERVER_KEY"
ENV_KEY_FILE: Final = "TROUPE_KEY_FILE"
ENV_HTTP_SECRET: Final = "TROUPE_HTTP_SECRET"
"""The HTTP front's secret (hex), from the daemon that starts it: the key of the resume tokens it derives."""


class KeyFileError(ValueError):
    """A key or key directory cannot be used; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What a key lets its holder do: its name, and its rights (``operator``; server names or ``*`` on the back)."""

    name: str
    rights: frozenset[str] = frozenset()


@dataclass(frozen=True)
class KeyRing:
    """Allowed public keys (z85) per socket; built by `load_ring`, swapped whole on reload."""

    front: Mapping[bytes, Grant] = field(default_factory=dict)
    back: Mapping[bytes, Grant] = field(default_factory=dict)

    def grant(self, domain: str, public_key: bytes) -> Grant | None:
        """The grant of a (binary, 32-byte) public key on ``front`` or ``back`` (``events``: the front's)."""
        keys = self.back if domain == "back" else self.front
        return keys.get(z85.encode(public_key)) if len(public_key) == 32 else None

    def rights(self, domain: str, z85_key: bytes) -> frozenset[str] | None:
        """The rights of a key (Z85, as key files hold it) on ``front`` or ``back``; None if it is not let in."""
        grant = (self.back if domain == "back" else self.front).get(z85_key)
        return grant.rights if grant is not None else None


@dataclass(frozen=True)
class ServerKeys:
    """The daemon's key pair (z85)."""

    public: bytes
    secret: bytes = field(repr=False)


def state_key_paths(state_dir: Path) -> tuple[Path, Path]:
    return state_dir / f"{DAEMON_KEY}.key", state_dir / f"{DAEMON_KEY}.key_secret"


def generate(directory: Path, name: str = DAEMON_KEY, *, force: bool = False) -> bytes:
    """Write ``NAME.key`` and ``NAME.key_secret`` (mode 0600) into ``directory``; returns the public key."""
    if not NAME.fullmatch(name):
        raise KeyFileError(f"key name {name!r} must be letters, digits, '_', '.', '@', '-' (at most 128)")
    public_path, secret_path = directory / f"{name}.key", directory / f"{name}.key_secret"
    if secret_path.exists() and not force:
        raise KeyFileError(
            f"{secret_path} exists; every peer that trusts its public key would be locked out by a new one. "
            "Pass --force to replace it"
        )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    old = os.umask(0o077)
    try:
        public_file, secret_file = zmq.auth.create_certificates(directory, name)
    finally:
        os.umask(old)
    os.chmod(secret_file, 0o600)
    os.chmod(public_file, 0o644)
    public, _ = zmq.auth.load_certificate(public_path)
    return public


def load_server_keys(state_dir: Path) -> ServerKeys | None:
    """The daemon's key pair from its state directory, or None if ``troupe keys generate`` was not run."""
    _public_path, secret_path = state_key_paths(state_dir)
    if not secret_path.exists():
        return None
    mode = secret_path.stat().st_mode & 0o077
    if mode:
        raise KeyFileError(f"{secret_path} can be read by others (mode {oct(mode)}); chmod 600 it")
    public, secret = _load(secret_path)
    if secret is None:
        raise KeyFileError(f"{secret_path} holds no secret-key line; generate it again with `troupe keys generate`")
    return ServerKeys(public, secret)


def load_dir(directory: Path | None, rights: frozenset[str] = frozenset()) -> dict[bytes, Grant]:
    """The ``*.key`` files of ``directory`` (none if it is missing), by z85 public key."""
    if directory is None or not directory.is_dir():
        return {}
    keys: dict[bytes, Grant] = {}
    for path in sorted(directory.glob("*.key"))[: MAX_KEYS + 1]:
        if len(keys) >= MAX_KEYS:
            raise KeyFileError(f"{directory} holds more than {MAX_KEYS} keys")
        public, _ = _load(path)
        keys[public] = Grant(path.stem, rights)
    return keys


def load_ring(clients_dir: Path | None, operators_dir: Path | None, adapters_dir: Path | None) -> KeyRing:
    """Every allowed key, read now. An operator's key is also a client's; a key in both counts as an operator's."""
    front = load_dir(clients_dir) | load_dir(operators_dir, frozenset({OPERATOR}))
    back: dict[bytes, Grant] = {}
    if adapters_dir is not None and adapters_dir.is_dir():
        for server_dir in sorted(p for p in adapters_dir.iterdir() if p.is_dir()):
            for key, grant in load_dir(server_dir).items():
                rights = back[key].rights if key in back else frozenset()
                back[key] = Grant(grant.name, rights | {server_dir.name})
        for key, grant in load_dir(adapters_dir, frozenset({ANY_SERVER})).items():
            back[key] = grant
    return KeyRing(front, back)


def _load(path: Path) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc}") from None
    for key in (public, secret):
        if key is not None and not _valid(key):
            raise KeyFileError(f"{path}: a key must be 40 characters of Z85 (as `troupe keys generate` writes)")
    return public, secret


def _valid(key: bytes) -> bool:
    if len(key) != 40:
        return False
    try:
        return len(z85.decode(key)) == 32
    except (ValueError, KeyError, TypeError):
        return False


@dataclass(frozen=True)
class Credentials:
    """What a peer needs to reach a daemon over CurveZMQ: the daemon's public key and a key pair of its own."""

    server_key: bytes
    public: bytes
    secret: bytes = field(repr=False)

    @classmethod
    def resolve(
        cls, server_key: str | None = None, key_file: str | None = None, environ: Mapping[str, str] | None = None
    ) -> Credentials | None:
        """From the arguments, else ``TROUPE_SERVER_KEY`` / ``TROUPE_KEY_FILE``; None when neither is set.

        ``server_key`` is the daemon's public key (40 Z85 characters) or the path of its ``.key`` file;
        ``key_file`` is the path of this peer's ``.key_secret`` file.
        """
        env = os.environ if environ is None else environ
        server_key = server_key or env.get(ENV_SERVER_KEY) or None
        key_file = key_file or env.get(ENV_KEY_FILE) or None
        if server_key is None and key_file is None:
            return None
        if server_key is None or key_file is None:
            missing = (
                "the daemon's public key (--server-key or TROUPE_SERVER_KEY)"
                if server_key is None
                else (
                    "a key file of this peer's (--key-file or TROUPE_KEY_FILE, made by `troupe keys generate --name`)"
                )
            )
            raise KeyFileError(f"CurveZMQ needs both keys; {missing} is missing")
        public, secret = _load(Path(key_file))
        if secret is None:
            raise KeyFileError(f"{key_file} holds only a public key; give the .key_secret file")
        return cls(_server_key(server_key), public, secret)

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CurveZMQ client of the daemon; call before connecting."""
        sock.curve_serverkey = self.server_key
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


def _server_key(text: str) -> bytes:
    key = text.strip().encode()
    if _valid(key):
        return key
    path = Path(text)
    if path.is_file():
        public, _ = _load(path)
        return public
    raise KeyFileError(
        f"the daemon's public key {text[:60]!r} is neither 40 Z85 characters nor a key file; "
        "`troupe keys show` on the daemon's machine prints it"
    )
