"""The architecture's rules, checked on the import graph built from the source.

Layers, lowest first (docs/architecture.rst draws them); a module imports its
own group or a group listed for it, never one above it, and no import chain
comes back to where it started. Imports under ``TYPE_CHECKING`` and inside
functions count: a cycle hidden from the interpreter is still one in the design.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT

FOLDERS = {"actors": "mcp_troupe.actors", "transport": "mcp_troupe.transport", "examples": "mcp_troupe.examples"}

GROUPS: dict[str, tuple[str, ...]] = {
    # group: module prefixes (the longest prefix that matches decides)
    "wire": ("mcp_troupe.transport.wire",),
    "io": (
        "mcp_troupe.transport",
        "mcp_troupe.transport.mailbox",
        "mcp_troupe.transport.runtime",
        "mcp_troupe.transport.dealer",
        "mcp_troupe.transport.discovery",
    ),
    "hub": ("mcp_troupe.transport.hub",),
    "client": ("mcp_troupe.transport.client",),
    "adapter": ("mcp_troupe.transport.adapter",),
    "store": ("mcp_troupe.transport.store",),
    "bridge": ("mcp_troupe.transport.bridge",),
    "http_rules": tuple(f"mcp_troupe.transport.http.{name}" for name in ("rules", "replay", "routing", "params")),
    "http": ("mcp_troupe.transport.http",),
    "upstream_rules": tuple(f"mcp_troupe.transport.upstream.{name}" for name in ("rules", "sse", "credentials")),
    "upstream": ("mcp_troupe.transport.upstream",),
    "core": ("mcp_troupe.actors.core",),
    "telemetry": ("mcp_troupe.actors.telemetry",),
    "shells": ("mcp_troupe.actors.shells",),
    "daemon": ("mcp_troupe.actors", "mcp_troupe.actors.daemon"),
    "cli": ("mcp_troupe.actors.cli", "mcp_troupe.actors.__main__"),
    "examples": ("mcp_troupe.examples",),
}

MAY_IMPORT: dict[str, set[str]] = {
    "wire": set(),
    "core": {"wire"},
    "io": {"wire"},
    "hub": {"wire", "io"},
    "client": {"wire", "io"},
    "adapter": {"wire", "io", "upstream", "upstream_rules"},
    "bridge": {"wire", "io"},
    "http_rules": {"wire"},
    "http": {"wire", "io", "http_rules"},
    "upstream_rules": {"wire", "http_rules"},
    "upstream": {"wire", "io", "http_rules", "upstream_rules"},
    "telemetry": {"wire", "core"},
    "shells": {"wire", "core", "telemetry"},
    "store": set(),
    "daemon": {"wire", "core", "io", "hub", "store", "telemetry", "shells", "http_rules", "upstream_rules"},
    "cli": {
        "wire",
        "core",
        "io",
        "hub",
        "store",
        "client",
        "adapter",
        "bridge",
        "http",
        "http_rules",
        "upstream",
        "upstream_rules",
        "telemetry",
        "shells",
        "daemon",
    },
    "examples": {"wire", "io", "client"},
}

PURE = {"wire", "core", "http_rules", "upstream_rules"}
"""Groups that never touch sockets, threads' clocks or pykka."""

IMPURE_MODULES = {"zmq", "pykka", "socket", "select", "selectors", "subprocess", "asyncio", "time", "datetime"}


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [package, *path.relative_to(ROOT / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = modules()


def group_of(module: str) -> str:
    best = max(
        ((prefix, group) for group, prefixes in GROUPS.items() for prefix in prefixes if _under(module, prefix)),
        key=lambda pair: len(pair[0]),
    )
    return best[1]


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def imports_of(module: str) -> Iterator[str]:
    """Every module name ``module`` imports: project ones resolved to the module, others as written."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module}: relative import; the project imports absolutely"
            base = node.module or ""
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base


def graph() -> dict[str, set[str]]:
    return {module: {target for target in imports_of(module) if target in MODULES} for module in MODULES}


def test_every_module_has_a_group() -> None:
    for module in MODULES:
        assert group_of(module) in MAY_IMPORT


def test_nothing_imports_upward() -> None:
    offenders = [
        f"{module} ({group_of(module)}) imports {target} ({group_of(target)})"
        for module, targets in graph().items()
        for target in targets
        if group_of(target) != group_of(module) and group_of(target) not in MAY_IMPORT[group_of(module)]
    ]
    assert offenders == []


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``edges`` if there is one (depth-first search, colours)."""
    colour: dict[str, int] = dict.fromkeys(edges, 0)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for target in sorted(edges[node]):
            if colour[target] == 1:
                return [*stack[stack.index(target) :], target]
            if colour[target] == 0 and (cycle := visit(target)):
                return cycle
        stack.pop()
        colour[node] = 2
        return None

    for node in sorted(edges):
        if colour[node] == 0 and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle() -> None:
    assert find_cycle(graph()) is None


@pytest.mark.parametrize("module", sorted(m for m in MODULES if group_of(m) in PURE))
def test_the_pure_layers_touch_no_socket_clock_or_actor(module: str) -> None:
    external = {name.split(".")[0] for name in imports_of(module) if not name.startswith("mcp_troupe")}
    assert external & IMPURE_MODULES == set()


def test_no_locks_in_actors_or_transport() -> None:
    pattern = re.compile(r"\b(R?Lock|Condition|Semaphore|BoundedSemaphore)\s*\(")
    offenders = [
        module
        for module, path in MODULES.items()
        if not module.startswith("mcp_troupe.examples") and pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_only_transport_touches_zmq() -> None:
    """The hub, and the client, adapter and bridge loops, own sockets; no actor does."""
    offenders = [
        module
        for module in MODULES
        if module.startswith("mcp_troupe.actors") and any(name.split(".")[0] == "zmq" for name in imports_of(module))
    ]
    assert offenders == []
