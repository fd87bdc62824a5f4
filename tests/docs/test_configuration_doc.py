"""docs/configuration.rst must list every key the configuration loader accepts, with the code's defaults.

The page is parsed as plain text (docutils is not a dependency), relying on its
conventions: sections are underlined with ``=`` or ``-``; the section of each
table is titled with the table's name in double back-quotes (``[daemon]``,
``[servers.NAME]``, ``[supervisor]``, ``[limits]``) and holds a ``list-table``
whose rows start with ``* - ``key``, followed by the type, the default and the
meaning. A default is written as in the TOML file, in double back-quotes at the
start of its cell. A key the code gives no plain default (none at all, ``None``
for "off", or ``""`` that the loader fills in) has words there instead, or an
``ipc://<runtime_dir>/...`` endpoint that must be the one the loader computes.

Checks compare both ways: a key added to ``DAEMON_KEYS``, ``SERVER_KEYS``,
``SUPERVISOR_KEYS``, ``LIMIT_KEYS`` or ``SECURITY_KEYS`` without a row fails, and so does a row
left behind after its key is gone, a default changed in one place only, a type
the loader does not accept, or a ``troupe serve`` flag the row forgets (or names
wrongly). The TOML examples must load, and mean what they say.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from dataclasses import MISSING, fields
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from mcp_troupe.actors.cli import main as cli
from mcp_troupe.actors.core.options import Limits
from mcp_troupe.actors.core.supervision import SupervisorPolicy
from mcp_troupe.actors.daemon.config import (
    DAEMON_KEYS,
    HTTP_KEYS,
    LIMIT_KEYS,
    SECURITY_KEYS,
    SERVER_KEYS,
    SUPERVISOR_KEYS,
    DaemonConfig,
    HttpConfig,
    SecurityConfig,
    ServerConfig,
    load,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.rst"

KeySpec = dict[str, tuple[tuple[type, ...], str]]

TABLES: dict[str, KeySpec] = {
    "[daemon]": DAEMON_KEYS,
    "[servers.NAME]": SERVER_KEYS,
    "[supervisor]": SUPERVISOR_KEYS,
    "[limits]": LIMIT_KEYS,
    "[security]": SECURITY_KEYS,
    "[http]": HTTP_KEYS,
}
"""Section title (without its back-quotes) -> the keys the loader accepts in that table."""

TYPE_WORDS: dict[tuple[type, ...], str] = {
    (str,): "string",
    (int,): "integer",
    (int, float): "number",
    (bool,): "boolean",
    (list,): "list of strings",
    (dict,): "table of strings",
    (str, list): "string or list of strings",
}
"""How the doc's "type" column names the types the loader accepts."""

_ADORNMENT = re.compile(r"([=-])\1*")
_ROW = re.compile(r"^\s*\* - ``([^`]+)``\s*$")
_CELL = re.compile(r"^\s*- (.*?)\s*$")
_FLAG = re.compile(r"``(--[a-z][a-z-]*)``")
_LITERAL = re.compile(r"^``([^`]+)``")


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def section(title: str) -> list[str]:
    """The lines of the one section called ``title``, up to the next section of its level or above."""
    lines = doc_text().splitlines()
    levels = {"=": 1, "-": 2}
    heads = [
        (i, lines[i].strip(), levels[lines[i + 1][0]])
        for i in range(len(lines) - 1)
        if lines[i].strip()
        and not lines[i][0].isspace()
        and _ADORNMENT.fullmatch(lines[i + 1])
        and len(lines[i + 1]) >= len(lines[i])
        and not (i > 0 and lines[i - 1] == lines[i + 1])  # the overlined page title
    ]
    found = [(n, head) for n, head in enumerate(heads) if head[1] == title]
    assert len(found) == 1, f"docs/configuration.rst needs one section {title!r}, found {len(found)}"
    n, (start, _, level) = found[0]
    end = next((i for i, _, lv in heads[n + 1 :] if lv <= level), len(lines))
    return lines[start + 2 : end]


def table_rows(lines: list[str]) -> dict[str, list[str]]:
    """The first list-table in ``lines``: key -> its other cells, each cell's lines joined by spaces."""
    start = next((i for i, line in enumerate(lines) if line.strip().startswith(".. list-table::")), None)
    assert start is not None, "no list-table in this section"
    rows: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        if not line.startswith(" "):  # the table ended
            break
        if match := _ROW.match(line):
            assert match.group(1) not in rows, f"row ``{match.group(1)}`` appears twice"
            current = rows[match.group(1)] = []
        elif line.lstrip().startswith("* - "):
            current = None  # the header row
        elif current is not None and (cell := _CELL.match(line)):
            current.append(cell.group(1))
        elif current:
            current[-1] += " " + line.strip()
    return rows


@pytest.fixture(scope="module")
def documented() -> dict[str, dict[str, list[str]]]:
    """Section title -> key -> cells (type, default, meaning)."""
    tables = {title: table_rows(section(f"``{title}``")) for title in TABLES}
    for title, rows in tables.items():
        for key, cells in rows.items():
            assert len(cells) == 3, f"{title} {key}: the row needs type, default and meaning, has {cells}"
    return tables


def code_default(title: str, key: str) -> Any:
    """The dataclass default behind ``key`` of table ``title``; MISSING when it has none."""
    if title == "[limits]":
        owner: type = Limits
    elif title == "[servers.NAME]":
        owner = ServerConfig
    elif title == "[security]":
        owner = SecurityConfig
    elif title == "[http]":
        owner = HttpConfig
    elif title == "[supervisor]" and key in {f.name for f in fields(SupervisorPolicy)}:
        owner = SupervisorPolicy
    else:  # [daemon], and the [supervisor] keys the loader moves to DaemonConfig
        owner = DaemonConfig
    field = {f.name: f for f in fields(owner)}.get(key)
    assert field is not None, f"{title} {key} is no field of {owner.__name__}; teach this test where it goes"
    if field.default is not MISSING:
        value = field.default
    elif field.default_factory is not MISSING:
        value = field.default_factory()
    else:
        return MISSING
    return value.value if isinstance(value, Enum) else value


def toml_value(text: str) -> Any:
    """The value a TOML literal stands for; KeyError when ``text`` is not one."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        raise KeyError(text) from None


def every_key() -> list[tuple[str, str]]:
    return [(title, key) for title, keys in TABLES.items() for key in keys]


@pytest.mark.parametrize("title", list(TABLES))
def test_each_table_documents_exactly_the_keys_the_loader_accepts(
    documented: dict[str, dict[str, list[str]]], title: str
) -> None:
    rows, in_code = set(documented[title]), set(TABLES[title])
    assert rows == in_code, (
        f"{title}: keys the loader accepts without a row {sorted(in_code - rows)}, "
        f"rows for keys it refuses {sorted(rows - in_code)}"
    )


def test_every_key_appears_in_the_page() -> None:
    text = doc_text()
    missing = [f"{title} {key}" for title, key in every_key() if f"``{key}``" not in text]
    assert not missing, f"docs/configuration.rst never mentions {missing}"


@pytest.mark.parametrize(("title", "key"), every_key())
def test_each_key_has_the_type_the_loader_accepts(
    documented: dict[str, dict[str, list[str]]], title: str, key: str
) -> None:
    types = TABLES[title][key][0]
    assert types in TYPE_WORDS, f"{title} {key} accepts {types}: name them in TYPE_WORDS and in the doc"
    word, cell = TYPE_WORDS[types], documented[title][key][0]
    assert cell == word or cell.startswith(f"{word} ("), f"{title} {key}: the doc says {cell!r}, expected {word!r}"


@pytest.mark.parametrize(("title", "key"), every_key())
def test_each_key_has_the_code_default(
    documented: dict[str, dict[str, list[str]]], title: str, key: str, tmp_path: Path
) -> None:
    default, cell = code_default(title, key), documented[title][key][1]
    literal = _LITERAL.match(cell)
    if default is MISSING or default is None or default == "":
        # No plain default: words, or the endpoint the loader computes.
        if literal and "<runtime_dir>" in literal.group(1):
            config = load(None, {"runtime_dir": str(tmp_path)})
            expected = literal.group(1).replace("<runtime_dir>", str(tmp_path))
            assert getattr(config, key) == expected, f"{title} {key}: the loader makes {getattr(config, key)!r}"
            return
        if literal:
            with pytest.raises(KeyError):
                toml_value(literal.group(1))
        return
    assert literal, f"{title} {key}: the default cell must start with the default in ``double back-quotes``"
    try:
        value = toml_value(literal.group(1))
    except KeyError:
        pytest.fail(f"{title} {key}: the default {literal.group(1)!r} is not a TOML value")
    if isinstance(default, tuple) and isinstance(value, list):
        value = tuple(value)  # a TOML array the loader keeps as a tuple (the config is frozen)
    assert (type(value), value) == (type(default), default), (
        f"{title} {key}: the doc says {literal.group(1)}, the code's default is {default!r}"
    )


def serve_flags() -> dict[str, list[str]]:
    """``troupe serve``'s options: destination (the config key it overrides) -> its option strings."""
    parser = cli._parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve = sub.choices["serve"]
    return {a.dest: a.option_strings for a in serve._actions if a.option_strings}


@pytest.mark.parametrize(("title", "key"), every_key())
def test_each_key_names_its_command_line_flag(
    documented: dict[str, dict[str, list[str]]], title: str, key: str
) -> None:
    flags = serve_flags()
    named = set(_FLAG.findall(documented[title][key][2]))
    expected = set(flags.get("http_" + key if title == "[http]" else key, []))
    assert named == expected, (
        f"{title} {key}: the row names the flags {sorted(named)}, troupe serve has {sorted(expected)}"
    )


def toml_examples() -> list[str]:
    blocks = re.findall(r"^\.\. code-block:: toml\n\n((?:    .*\n|\n)+)", doc_text(), re.MULTILINE)
    return ["\n".join(line[4:] for line in block.splitlines()) + "\n" for block in blocks]


def test_the_toml_examples_load_and_mean_what_they_say(tmp_path: Path) -> None:
    examples = toml_examples()
    assert examples, "docs/configuration.rst has no TOML example"
    policy_keys = {f.name for f in fields(SupervisorPolicy)}
    for number, text in enumerate(examples, 1):
        path = tmp_path / f"example{number}.toml"
        path.write_text(text, encoding="utf-8")
        config = load(path, {"runtime_dir": str(tmp_path)})
        data = tomllib.loads(text)
        for key, value in data.get("daemon", {}).items():
            assert getattr(config, key) == value, f"example {number}: [daemon] {key} = {value!r} was not applied"
        for key, value in data.get("supervisor", {}).items():
            applied = getattr(config.supervisor if key in policy_keys else config, key)
            applied = applied.value if isinstance(applied, Enum) else applied
            assert applied == value, f"example {number}: [supervisor] {key} = {value!r} was not applied"
        for key, value in data.get("limits", {}).items():
            expected = value if key != "timeouts" else {method: float(s) for method, s in value.items()}
            assert getattr(config.limits, key) == expected, f"example {number}: [limits] {key} = {value!r} not applied"
        assert set(config.servers) == set(data.get("servers", {})), f"example {number}: not every server was loaded"
        for name, table in data.get("servers", {}).items():
            for key, value in table.items():
                applied = getattr(config.servers[name], key)
                expected = tuple(value) if key in ("command", "pass_env") else value
                assert applied == expected, f"example {number}: [servers.{name}] {key} = {value!r} was not applied"
