"""README.rst's commands, run as a user would run them."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import EXAMPLE_TOOLS, ROOT, wait_for

README = (ROOT / "README.rst").read_text()
BIN = Path(sys.executable).parent
TEST_COMMAND = "python3 -m venv .venv && . .venv/bin/activate && pip install '.[test]' && pytest"
SERVE_COMMAND = "python3 -m venv .venv && . .venv/bin/activate && pip install '.[example]' && troupe serve"


def readme_lines(prefix: str) -> list[str]:
    return [line.strip() for line in README.splitlines() if line.strip().startswith(prefix)]


def test_quick_start_has_the_two_commands_and_ci_runs_the_test_one() -> None:
    assert readme_lines("python3 -m venv") == [SERVE_COMMAND, TEST_COMMAND]
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text()


def test_the_installed_console_script_is_what_readme_runs() -> None:
    assert (BIN / "troupe").exists(), "run the tests from the environment README.rst's command installs"


@pytest.mark.timeout(120)
def test_serve_then_try_it_commands_from_a_second_process() -> None:
    runtime = Path(tempfile.mkdtemp(prefix="trp-", dir="/tmp"))
    env = {**os.environ, "TROUPE_RUNTIME_DIR": str(runtime), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    serve_words = shlex.split(SERVE_COMMAND.rsplit("&&", 1)[1])
    daemon = subprocess.Popen(serve_words, env=env, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        wait_for(lambda: (runtime / "front.sock").exists() or daemon.poll() is not None, 30, "the daemon's socket")
        assert daemon.poll() is None, daemon.stderr.read().decode() if daemon.stderr else ""
        calls = readme_lines("troupe call")
        assert len(calls) == 2
        listed = subprocess.run(calls[0], shell=True, env=env, capture_output=True, timeout=60, cwd=ROOT)
        assert listed.returncode == 0, listed.stderr.decode()
        assert sorted(t["name"] for t in json.loads(listed.stdout)["tools"]) == EXAMPLE_TOOLS
        added = subprocess.run(calls[1], shell=True, env=env, capture_output=True, timeout=60, cwd=ROOT)
        assert added.returncode == 0, added.stderr.decode()
        assert json.loads(added.stdout)["content"][0]["text"] == "5"
        example = subprocess.run(
            [sys.executable, "-m", "mcp_troupe.examples.client"], env=env, capture_output=True, timeout=60, cwd=ROOT
        )
        assert example.returncode == 0, example.stderr.decode()
        assert re.search(rb"2 \+ 3 = 5", example.stdout)
        assert b"closed: client" in example.stdout
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0


@pytest.mark.timeout(60)
def test_call_reports_failures_on_stderr_with_exit_codes(daemon) -> None:  # type: ignore[no-untyped-def]
    env = {**daemon.env, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

    def call(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["troupe", "call", *args], env=env, capture_output=True, timeout=60, cwd=ROOT)

    missing = call("example", "no/such/method")
    assert missing.returncode == 1 and b"-32601" in missing.stderr and not missing.stdout
    tool_error = call("example", "tools/call", "--params", '{"name": "fail", "arguments": {"message": "kaput"}}')
    assert tool_error.returncode == 1 and b"isError" in tool_error.stderr and b"kaput" in tool_error.stdout
    bad_json = call("example", "tools/list", "--params", "{nope")
    assert bad_json.returncode == 2 and b"not valid JSON" in bad_json.stderr
    no_server = call("nope", "tools/list")
    assert no_server.returncode == 3 and b"unknown_server" in no_server.stderr
    no_daemon = subprocess.run(
        ["troupe", "call", "example", "tools/list"],
        env={**env, "TROUPE_RUNTIME_DIR": "/tmp/troupe-no-daemon-here"},
        capture_output=True,
        timeout=30,
    )
    assert no_daemon.returncode == 3 and b"troupe serve" in no_daemon.stderr


def literal_blocks() -> list[str]:
    """README's ``::`` blocks, dedented."""
    blocks, lines = [], README.splitlines()
    for number, line in enumerate(lines):
        if not line.rstrip().endswith("::"):
            continue
        body = []
        for following in lines[number + 2 :]:
            if following and not following.startswith("    "):
                break
            body.append(following[4:])
        blocks.append("\n".join(body).strip())
    return blocks


def test_every_config_block_loads(tmp_path: Path) -> None:
    from mcp_troupe.actors.daemon.config import load

    tables = [block for block in literal_blocks() if block.startswith("[")]
    assert len(tables) >= 2, "the servers example and the operator's [limits]"
    for number, table in enumerate(tables):
        path = tmp_path / f"readme-{number}.toml"
        path.write_text(table)
        load(path)


def test_the_client_snippets_are_json_and_name_the_daemon_as_the_docs_say() -> None:
    blocks = literal_blocks()
    snippet = next(block for block in blocks if block.startswith("{"))
    server = json.loads(snippet)["mcpServers"]["example"]
    assert server["command"].endswith("/troupe") and server["args"] == ["connect", "example"]
    variants = next(block for block in blocks if block.startswith('"args"'))
    args = [json.loads("{" + line + "}")["args"] for line in variants.splitlines()]
    assert [a[2] for a in args] == ["--runtime-dir", "--endpoint"]
    help_text = subprocess.run([str(BIN / "troupe"), "connect", "--help"], capture_output=True, timeout=30).stdout
    assert b"--runtime-dir" in help_text and b"--endpoint" in help_text
    assert b"--server-key" in help_text and b"--key-file" in help_text


def test_the_http_commands_serve_and_answer_as_shown() -> None:
    from http_support import free_port, request, sse_events

    serve = readme_lines("troupe serve --http")
    curls = readme_lines("curl ")
    assert len(serve) == 1 and len(curls) == 1
    port = free_port()
    runtime = Path(tempfile.mkdtemp(prefix="trp-", dir="/tmp"))
    env = {**os.environ, "TROUPE_RUNTIME_DIR": str(runtime), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    words = shlex.split(serve[0].replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
    daemon = subprocess.Popen(words, env=env, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        curl = shlex.split(curls[0])
        url = next(w for w in curl if w.startswith("http://"))
        assert url.startswith("http://127.0.0.1:8080/")
        headers = dict(curl[i + 1].split(": ", 1) for i, w in enumerate(curl) if w == "-H")
        body = curl[curl.index("-d") + 1].encode()
        path = url.removeprefix("http://127.0.0.1:8080")

        def answered() -> tuple[int, dict[str, str], bytes] | None:
            assert daemon.poll() is None, daemon.stderr.read().decode() if daemon.stderr else ""
            try:
                return request(port, "POST", path, raw=body, headers=headers)
            except OSError:
                return None

        status, got, payload = wait_for(answered, 30, "the README's HTTP call to be answered")
        assert status == 200, payload
        answer = json.loads(payload) if got["content-type"].startswith("application/json") else None
        if answer is None:
            answer = [e.message() for e in sse_events(payload) if e.data][-1]
        assert answer["result"]["content"][0]["text"] == "5"
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
