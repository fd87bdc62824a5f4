"""The configuration of remote (``url``) servers: what the loader accepts, refuses, and hands the adapters."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_troupe.actors.daemon.adapter_processes import adapter_command
from mcp_troupe.actors.daemon.config import ConfigError, DaemonConfig, load


def loaded(tmp_path: Path, server: str) -> DaemonConfig:
    path = tmp_path / "troupe.toml"
    path.write_text(f"[servers.search]\n{server}\n")
    return load(path, {"runtime_dir": str(tmp_path)})


def test_a_url_server_with_headers_and_timeout_loads(tmp_path: Path) -> None:
    config = loaded(
        tmp_path,
        'url = "https://search.example.com/mcp"\nheaders = { Authorization = "Bearer ${TOKEN}" }\ntimeout = 7',
    )
    server = config.servers["search"]
    assert server.url == ("https://search.example.com/mcp",)
    assert server.command == ()
    assert dict(server.headers) == {"Authorization": "Bearer ${TOKEN}"}
    assert server.timeout == 7


def test_a_url_list_gets_adapters_per_url(tmp_path: Path) -> None:
    server = loaded(tmp_path, 'url = ["http://a:1/mcp", "http://b:2/mcp"]\nadapters = 2').servers["search"]
    assert server.adapter_urls == ("http://a:1/mcp",) * 2 + ("http://b:2/mcp",) * 2


def test_a_command_server_has_no_urls(tmp_path: Path) -> None:
    server = loaded(tmp_path, 'command = ["srv"]\nadapters = 3').servers["search"]
    assert server.adapter_urls == (None, None, None)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ('url = "ftp://host/mcp"', "http:// or https://"),
        ('url = "https:///mcp"', "with a host"),
        ('url = "https://user:pw@host/mcp"', "credentials go in headers"),
        ("url = []", "url must be"),
        ("url = 5", "url"),
        ('url = "https://h/mcp"\ncommand = ["srv"]', "not both"),
        ('url = "https://h/mcp"\npass_env = ["TOKEN"]', "a url server has none"),
        ('url = "https://h/mcp"\ncwd = "/tmp"', "a url server has none"),
        ('url = "https://h/mcp"\ntimeout = 0', "timeout must be > 0"),
        ('url = "https://h/mcp"\ntimeout = -1', "timeout must be > 0"),
        ('url = "https://h/mcp"\ntimeout = "soon"', "timeout"),
        ('command = ["srv"]\nheaders = { X-Key = "k" }', "headers are sent to a url server"),
        ('url = "https://h/mcp"\nheaders = { Mcp-Session-Id = "x" }', "set by troupe itself"),
        ('url = "https://h/mcp"\nheaders = { Accept = "x" }', "set by troupe itself"),
        ('url = "https://h/mcp"\nheaders = { X-Key = "$TOKEN" }', "X-Key"),
        ('url = "https://h/mcp"\nheaders = { X-Key = 5 }', "must be a string"),
        ('url = "https://h/mcp"\nheaders = { X-Key = "a\\nb" }', "control character"),
        ("", "command must be"),
    ],
)
def test_bad_remote_server_tables_are_refused_saying_why(tmp_path: Path, body: str, said: str) -> None:
    with pytest.raises(ConfigError, match=r"\[servers\.search\]") as refused:
        loaded(tmp_path, body)
    assert said in str(refused.value)


def test_the_adapter_of_a_url_gets_the_templates_never_their_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKEN", "s3cret-value")
    config = loaded(tmp_path, 'url = "https://h/mcp"\nheaders = { Authorization = "Bearer ${TOKEN}" }\ntimeout = 4')
    server = config.servers["search"]
    cmd = adapter_command(server, "ipc:///back", "a1", config, server.adapter_urls[0])
    assert cmd[cmd.index("--url") + 1] == "https://h/mcp"
    assert float(cmd[cmd.index("--timeout") + 1]) == 4
    assert cmd[cmd.index("--header") + 1] == "Authorization: Bearer ${TOKEN}"
    assert "--" not in cmd
    assert not any("s3cret" in part for part in cmd)


def test_a_refused_header_value_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        loaded(tmp_path, 'url = "https://h/mcp"\nheaders = { X-Key = "sk-live-1234$5" }')
    assert "X-Key" in str(refused.value) and "sk-live" not in str(refused.value)
