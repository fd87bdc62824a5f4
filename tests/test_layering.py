"""The architecture's rules, checked on the source."""

from __future__ import annotations

import ast
import re

from conftest import ROOT

PACKAGES = ("actors", "transport")


def sources(package: str) -> list[tuple[str, str]]:
    return [(str(p.relative_to(ROOT)), p.read_text()) for p in sorted((ROOT / package).rglob("*.py"))]


def test_no_locks_in_actors_or_transport() -> None:
    pattern = re.compile(r"\b(R?Lock|Condition|Semaphore|BoundedSemaphore)\s*\(")
    offenders = [name for pkg in PACKAGES for name, text in sources(pkg) if pattern.search(text)]
    assert offenders == []


def test_transport_never_imports_actors() -> None:
    offenders = []
    for name, text in sources("transport"):
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = [node.module or ""]
            else:
                continue
            offenders += [f"{name}: {t}" for t in targets if t == "actors" or t.startswith("actors.")]
    assert offenders == []


def test_actors_never_touch_zmq() -> None:
    """Only the hub (and the client/adapter loops in transport) own sockets."""
    offenders = [
        name for name, text in sources("actors") if re.search(r"^\s*(import zmq|from zmq)", text, re.MULTILINE)
    ]
    assert offenders == []
