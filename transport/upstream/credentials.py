"""Where the headers troupe sends a remote server come from: one pluggable place. Pure.

The adapter asks its `UpstreamCredentials` for headers before every request, and tells it when the
upstream refused them (401/403), so a source that can renew them (OAuth, a token file that rotates)
plugs in here without touching the transport. The one troupe has is `StaticHeaders`: the config's
``headers``, each value a template whose ``${NAME}`` parts are read from the environment once, at
start, so secrets live in the environment, never in the config, the command line or a log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final, Protocol

_REFERENCE: Final = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$")
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}")
RESERVED: Final = frozenset(
    {"accept", "content-type", "content-length", "host", "mcp-session-id", "mcp-protocol-version", "last-event-id"}
)
"""Headers troupe sets itself, which a config may not override."""


class CredentialsError(ValueError):
    """A header template that cannot be used; the message says which and why."""


class UpstreamCredentials(Protocol):
    def headers(self) -> Mapping[str, str]:
        """The headers to add to the next request (never logged)."""
        ...

    def rejected(self, status: int) -> None:
        """The upstream answered 401 or 403 to headers from `headers`."""
        ...


def references(template: str) -> list[str]:
    """The environment variables ``template`` reads; CredentialsError for a ``$`` that is not ``${NAME}``/``$$``."""
    names = []
    for found in _REFERENCE.finditer(template):
        if found.group(0) == "$":
            raise CredentialsError("a '$' in a header value must start ${NAME} (or be written $$)")
        if found.group(1):
            names.append(found.group(1))
    return names


def check_header(name: str, template: str) -> None:
    """CredentialsError unless ``name: template`` is a header troupe may send."""
    if not _HEADER_NAME.fullmatch(name):
        raise CredentialsError(f"header name {name!r} is not an HTTP token")
    if name.lower() in RESERVED or name.lower().startswith(("mcp-", "last-event")):
        raise CredentialsError(f"header {name!r} is set by troupe itself and cannot be configured")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in template):
        raise CredentialsError(f"header {name!r}: its value holds a control character")
    try:
        references(template)
    except CredentialsError as exc:
        raise CredentialsError(f"header {name!r}: {exc}") from None


def expand(template: str, environ: Mapping[str, str]) -> str:
    def one(found: re.Match[str]) -> str:
        if found.group(0) == "$$":
            return "$"
        name = found.group(1)
        if name not in environ:
            raise CredentialsError(f"environment variable {name} is not set (a header of this server reads it)")
        value = environ[name]
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise CredentialsError(f"environment variable {name} holds a control character; it cannot go in a header")
        return value

    references(template)
    return _REFERENCE.sub(one, template)


class StaticHeaders:
    """The config's headers, expanded once from ``environ``; raises CredentialsError saying what is missing."""

    def __init__(self, templates: Mapping[str, str], environ: Mapping[str, str]) -> None:
        resolved = {}
        for name, template in templates.items():
            check_header(name, template)
            try:
                resolved[name] = expand(template, environ)
            except CredentialsError as exc:
                raise CredentialsError(f"header {name!r}: {exc}") from None
        self._headers = resolved
        self.refusals = 0

    def headers(self) -> Mapping[str, str]:
        return self._headers

    def rejected(self, status: int) -> None:
        self.refusals += 1
