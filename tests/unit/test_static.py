"""The linters CI runs: ruff (lint, import order, format) over the project and ``mypy --strict`` over the package.

mypy reads the checkout through a tree that maps its folders to the import
namespace (``mcp_troupe/actors`` -> ``actors/``, as setup.cfg's package_dir
does), so what it checks is what is installed, under the names it is imported by.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

FOLDERS = ("actors", "transport", "examples")
LINTED = (*FOLDERS, "tests", "bench")


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff(command: list[str]) -> None:
    result = run([sys.executable, "-m", "ruff", *command, *LINTED], ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_the_whole_package(tmp_path: Path) -> None:
    tree = tmp_path / "tree" / "mcp_troupe"
    tree.mkdir(parents=True)
    for folder in FOLDERS:
        (tree / folder).symlink_to(ROOT / folder)
    args = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
    args += ["--cache-dir", str(ROOT / ".cache" / "mypy"), "-p", "mcp_troupe"]  # kept between runs: seconds, not ten
    result = subprocess.run(
        args,
        cwd=tmp_path / "tree",
        capture_output=True,
        text=True,
        timeout=300,
        env={"MYPYPATH": str(tree.parent), "PATH": ""},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout
