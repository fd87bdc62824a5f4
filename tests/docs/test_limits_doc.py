"""docs/limits.rst must list every limit with the default the code has.

The page is parsed as plain text (docutils is not a dependency), relying on its
conventions: sections are underlined with ``=`` or ``-``; the table under "The
limits at a glance" is a ``list-table`` whose rows start with ``* - ``key``,
then the default (in TOML spelling, in double back-quotes) and the
``troupe serve`` flag. Checks compare both ways, so a field added to
`mcp_troupe.actors.core.options.Limits` without the doc, a default changed in one place only,
or a row left in the doc after its field is gone, fails. The JSON-RPC error
codes troupe writes (found in transport/wire/jsonrpc.py) must each appear, and the
TOML and command-line examples must be accepted by the configuration loader and
the CLI and mean the same thing.
"""

from __future__ import annotations

import ast
import re
import shlex
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from mcp_troupe.actors.cli import main as cli
from mcp_troupe.actors.core.options import Limits
from mcp_troupe.actors.daemon.config import LIMIT_KEYS, DaemonConfig, ServerConfig, load
from mcp_troupe.transport.hub.loop import HubOptions
from mcp_troupe.transport.wire import jsonrpc

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "limits.rst"

_ROW = re.compile(r"^\s*\* - ``([^`]+)``\s*$")
_CELL = re.compile(r"^\s*- (.*?)\s*$")


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def section(title: str) -> list[str]:
    """The lines of the section called ``title`` (underlined with = or -), up to the next one of its level or above."""
    lines = doc_text().splitlines()
    levels = {"=": 1, "-": 2}
    heads = [
        (i, lines[i].strip(), levels[lines[i + 1][0]])
        for i in range(len(lines) - 1)
        if lines[i].strip()
        and not lines[i][0].isspace()
        and re.fullmatch(r"([=-])\1*", lines[i + 1])
        and len(lines[i + 1]) >= len(lines[i])
    ]
    found = [(n, head) for n, head in enumerate(heads) if head[1] == title]
    assert len(found) == 1, f"docs/limits.rst needs one section {title!r}, found {len(found)}"
    n, (start, _, level) = found[0]
    end = next((i for i, _, lv in heads[n + 1 :] if lv <= level), len(lines))
    return lines[start + 2 : end]


def table_rows(lines: list[str]) -> dict[str, list[str]]:
    """The first list-table in ``lines``: first cell (a literal) -> the other cells, each cell's first line."""
    start = next((i for i, line in enumerate(lines) if line.strip().startswith(".. list-table::")), None)
    assert start is not None, "no list-table in this section"
    table = lines[start + 1 :]
    rows: dict[str, list[str]] = {}
    for i, line in enumerate(table):
        match = _ROW.match(line)
        if not match:
            continue
        cells = []
        for follow in table[i + 1 :]:
            if follow.lstrip().startswith("* - ") or follow.strip().startswith(".. "):
                break
            if cell := _CELL.match(follow):
                cells.append(cell.group(1))
        assert match.group(1) not in rows, f"row ``{match.group(1)}`` appears twice"
        rows[match.group(1)] = cells
    return rows


def toml_value(value: object) -> str:
    """How a default is written in the doc: as it would be in the TOML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        assert not value, "a non-empty default table: teach toml_value to write it"
        return "{}"
    return repr(value)


def flag_of(name: str) -> str:
    return "--method-timeout METHOD=SECONDS" if name == "timeouts" else f"--{name.replace('_', '-')}"


@pytest.fixture(scope="module")
def glance() -> dict[str, list[str]]:
    return table_rows(section("The limits at a glance"))


def test_every_limit_is_in_the_table_and_nothing_else(glance: dict[str, list[str]]) -> None:
    in_code = {f.name for f in fields(Limits)}
    documented = set(glance)
    assert documented == in_code, (
        f"Limits fields missing from docs/limits.rst {sorted(in_code - documented)}, "
        f"rows for fields that no longer exist {sorted(documented - in_code)}"
    )


@pytest.mark.parametrize("name", [f.name for f in fields(Limits)])
def test_each_limit_has_its_current_default_and_flag(glance: dict[str, list[str]], name: str) -> None:
    cells = glance.get(name)
    assert cells is not None and len(cells) >= 2, f"no complete row for {name!r} in 'The limits at a glance'"
    default = getattr(Limits(), name)
    assert cells[0] == f"``{toml_value(default)}``", f"{name}: the doc says {cells[0]}, the code {default!r}"
    assert cells[1] == f"``{flag_of(name)}``", f"{name}: the doc names the flag {cells[1]}"


def test_the_documented_flags_exist(glance: dict[str, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    help_text = capsys.readouterr().out
    for name in glance:
        assert f"{flag_of(name).split()[0]} " in help_text, f"troupe serve has no flag {flag_of(name)}"
    assert set(glance) - {"timeouts"} == set(LIMIT_KEYS), "[limits] keys and documented rows differ"


def jsonrpc_codes_troupe_writes() -> dict[str, int]:
    """Error-code constants of transport/wire/jsonrpc.py (ints in -32768..-32000) that the daemon
    writes (used in actors/) or that are marked ``troupe:`` in their docstring."""
    body = ast.parse(Path(jsonrpc.__file__).read_text(encoding="utf-8")).body
    codes: dict[str, tuple[int, str]] = {}
    for node, after in zip(body, [*body[1:], None], strict=True):
        target = node.target if isinstance(node, ast.AnnAssign) else None
        value = getattr(jsonrpc, target.id, None) if isinstance(target, ast.Name) else None
        if isinstance(value, int) and not isinstance(value, bool) and -32768 <= value <= -32000:
            doc = after.value.value if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) else ""
            codes[target.id] = (value, str(doc))  # type: ignore[union-attr]
    used: set[str] = set()
    for source in (ROOT / "actors").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "jsonrpc":
                used.add(node.attr)
            elif isinstance(node, ast.ImportFrom) and node.module == "mcp_troupe.transport.wire.jsonrpc":
                used.update(alias.name for alias in node.names)
    return {name: value for name, (value, doc) in codes.items() if name in used or doc.startswith("troupe:")}


def test_every_jsonrpc_code_troupe_writes_is_mentioned() -> None:
    codes = jsonrpc_codes_troupe_writes()
    assert {"REQUEST_TIMEOUT", "TOO_MANY_PENDING", "RATE_LIMITED"} <= set(codes), "update this test's code finder"
    text = doc_text()
    missing = {name: value for name, value in codes.items() if f"``{value}``" not in text}
    assert not missing, f"docs/limits.rst never mentions {missing}"


def examples() -> tuple[str, list[str]]:
    """The TOML example (its text) and the command-line example (the arguments after ``troupe serve``)."""
    text = doc_text()
    block = re.search(r"^\.\. code-block:: toml\n\n((?:    .*\n|\n)+)", text, re.MULTILINE)
    assert block, "docs/limits.rst has no TOML example"
    toml = "\n".join(line[4:] for line in block.group(1).splitlines()) + "\n"
    command = re.search(r"command line::\n\n((?:    .*\n)+)", text)
    assert command, "docs/limits.rst has no command-line example"
    argv = shlex.split(command.group(1).replace("\\\n", " "))
    assert argv[:2] == ["troupe", "serve"], "the command-line example must be a troupe serve command"
    return toml, argv[2:]


def test_the_toml_example_is_accepted_and_means_what_it_says(tmp_path: Path) -> None:
    text, _ = examples()
    path = tmp_path / "troupe.toml"
    path.write_text(text, encoding="utf-8")
    limits = load(path, {"runtime_dir": str(tmp_path)}).limits
    for key, value in tomllib.loads(text)["limits"].items():
        expected = value if key != "timeouts" else {method: float(s) for method, s in value.items()}
        assert getattr(limits, key) == expected, f"[limits] {key} = {value!r} was not applied"


def test_the_command_line_example_matches_the_toml_example() -> None:
    text, argv = examples()
    args = cli._parser().parse_args(["serve", *argv])
    wanted = dict(tomllib.loads(text)["limits"])
    timeouts = wanted.pop("timeouts", {})
    for key, value in wanted.items():
        assert getattr(args, key) == value, f"--{key.replace('_', '-')} differs from [limits] {key} = {value!r}"
    assert cli._method_timeouts(args.method_timeout) == {m: float(s) for m, s in timeouts.items()}
    given = {name for name in LIMIT_KEYS if getattr(args, name) is not None}
    assert given == set(wanted), f"the command line sets {sorted(given)}, the TOML example {sorted(wanted)}"


def test_other_defaults_quoted_are_current() -> None:
    rows = table_rows(section("Other limits and timeouts"))
    quoted = {
        "[daemon] max_frame_bytes": str(DaemonConfig.max_frame_bytes),
        "[daemon] startup_timeout": f"{DaemonConfig.startup_timeout} s",
        "[daemon] shutdown_timeout": f"{DaemonConfig.shutdown_timeout} s",
        "[daemon] heartbeat_ms": f"{DaemonConfig.heartbeat_ms} ms",
        "[servers.NAME] capacity": str(ServerConfig.capacity),
    }
    for key, value in quoted.items():
        assert key in rows and rows[key][0] == value, f"{key}: the doc says {rows.get(key)}, the code {value}"
    tick_ms = round(HubOptions().tick_interval * 1000)
    assert f"ticks every {tick_ms} ms" in doc_text(), f"the daemon's clock ticks every {tick_ms} ms"
    assert f"     - {jsonrpc.MAX_DEPTH} levels" in doc_text()
    assert f"     - {HubOptions().sndhwm} frames" in doc_text()
