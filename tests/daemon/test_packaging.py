"""What ``pip install`` puts on a machine: one namespace, every package, and a plain install that says what it lacks."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, finish, start_daemon

FOLDERS = {"actors": "mcp_troupe.actors", "transport": "mcp_troupe.transport", "examples": "mcp_troupe.examples"}


def declared_packages() -> list[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return sorted(config["options"]["packages"].split())


def package_folders() -> list[str]:
    found = []
    for folder, package in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            found.append(".".join([package, *init.parent.relative_to(ROOT / folder).parts]))
    return sorted(found)


def test_setup_cfg_lists_every_package_folder_and_no_other() -> None:
    assert declared_packages() == package_folders()


@pytest.mark.timeout(300)
def test_the_wheel_holds_the_mcp_troupe_namespace_only(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: an in-tree build/ of an earlier run must not leak into this wheel
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "node_modules", "__pycache__", "*.egg-info")
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
        timeout=280,
    )
    [wheel] = tmp_path.glob("mcp_troupe-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [top_level] = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert archive.read(top_level).decode().split() == ["mcp_troupe"]
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"mcp_troupe"}
    packages = {name.rsplit("/", 1)[0].replace("/", ".") for name in names if name.endswith("/__init__.py")}
    assert sorted(packages) == declared_packages()
    assert "mcp_troupe/transport/py.typed" in names and "mcp_troupe/actors/py.typed" in names


NO_SDK = '''
import sys

class NoSDK:
    """As on a plain install: the MCP SDK (the `example` extra) cannot be imported."""

    def find_spec(self, name, path=None, target=None):
        if name == "mcp" or name.startswith("mcp."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoSDK())
'''


@pytest.mark.timeout(120)
def test_without_the_sdk_the_daemon_starts_and_says_what_the_example_needs(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(NO_SDK)
    daemon = start_daemon(env={"PYTHONPATH": str(tmp_path)})
    try:
        assert daemon.health()["status"] == "serving"
        assert "pip install 'mcp-troupe[example]'" in daemon.log()
        call = subprocess.run(
            [sys.executable, "-m", "mcp_troupe.actors", "call", "example", "tools/list"],
            env=daemon.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        finish(daemon)
    assert call.returncode == 1, call.stderr
    assert "server stderr: troupe's example server needs the MCP Python SDK" in call.stderr
    assert "pip install 'mcp-troupe[example]'" in call.stderr
