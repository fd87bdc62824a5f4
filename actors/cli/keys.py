"""``troupe keys``: the daemon's CurveZMQ key pair, peers' key pairs, reloading the allowed keys;
and the ``--server-key`` / ``--key-file`` flags every connecting command takes."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from mcp_troupe.actors.daemon.config import ConfigError, load
from mcp_troupe.transport.client import Client, FrameRefused, TroupeError
from mcp_troupe.transport.keys import DAEMON_KEY, ENV_KEY_FILE, ENV_SERVER_KEY, KeyFileError, generate, load_server_keys
from mcp_troupe.transport.runtime import RuntimeDirError, state_dir

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


def add_key_flags(parser: argparse.ArgumentParser) -> None:
    """``--server-key`` and ``--key-file``: CurveZMQ keys for a tcp endpoint (docs/security.rst)."""
    group = parser.add_argument_group("CurveZMQ, for a tcp endpoint (docs/security.rst)")
    group.add_argument(
        "--server-key", metavar="KEY", help=f"the daemon's public key, or its .key file (default: ${ENV_SERVER_KEY})"
    )
    group.add_argument(
        "--key-file",
        metavar="PATH",
        help=f"this peer's .key_secret file, from `troupe keys generate --name` (default: ${ENV_KEY_FILE})",
    )


def export_keys(args: argparse.Namespace) -> None:
    """The key flags override the environment for everything the command connects with."""
    for flag, name in (("server_key", ENV_SERVER_KEY), ("key_file", ENV_KEY_FILE)):
        value = getattr(args, flag, None)
        if value:
            os.environ[name] = value


def add_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="CurveZMQ keys: generate, show, reload (docs/security.rst)")
    verbs = keys.add_subparsers(required=True, metavar="VERB")
    make = verbs.add_parser(
        "generate", help="write a key pair (the daemon's, by default, into its state directory); print its public key"
    )
    make.add_argument("--name", default=DAEMON_KEY, help=f"NAME.key and NAME.key_secret (default {DAEMON_KEY})")
    make.add_argument("--dir", type=Path, help="where to write them (default: the daemon's state directory)")
    make.add_argument("--config", type=Path, help="the daemon's config file (for [daemon] state_dir)")
    make.add_argument("--force", action="store_true", help="replace an existing key pair")
    make.set_defaults(func=_generate)
    show = verbs.add_parser("show", help="print the daemon's public key (what peers give as --server-key)")
    show.add_argument("--dir", type=Path, help="the state directory (default: the daemon's)")
    show.add_argument("--config", type=Path, help="the daemon's config file (for [daemon] state_dir)")
    show.set_defaults(func=_show)
    reload = verbs.add_parser("reload", help="have the daemon read its key directories again (operator rights)")
    reload.add_argument(
        "--endpoint", help="the daemon's front endpoint (default: found as docs/configuration.rst says)"
    )
    add_key_flags(reload)
    reload.set_defaults(func=_reload)


def _fail(message: str, code: int) -> int:
    print(f"troupe: {message}", file=sys.stderr)
    return code


def _state_dir(args: argparse.Namespace) -> Path:
    directory: Path | None = args.dir
    return directory or load(args.config).state_dir or state_dir()


def _generate(args: argparse.Namespace) -> int:
    try:
        directory = _state_dir(args)
        public = generate(directory, args.name, force=args.force)
    except (ConfigError, KeyFileError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    print(public.decode())
    where = directory / args.name
    print(f"troupe: wrote {where}.key and {where}.key_secret (mode 0600: keep it secret)", file=sys.stderr)
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    try:
        keys = load_server_keys(_state_dir(args))
    except (ConfigError, KeyFileError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    if keys is None:
        return _fail("the daemon has no key pair yet: run `troupe keys generate`", EXIT_USAGE)
    print(keys.public.decode())
    return EXIT_OK


def _reload(args: argparse.Namespace) -> int:
    try:
        with Client(args.endpoint, timeout=10) as client:
            result = client.control("security.reload")
    except FrameRefused as exc:
        return _fail(f"reload refused: {exc}", EXIT_REFUSED)
    except (TroupeError, RuntimeDirError) as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    print(json.dumps(result))
    return EXIT_OK
