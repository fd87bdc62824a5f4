"""The Streamable HTTP front against a running daemon (docs/http.rst).

The daemon, its HTTP front, the adapters and the servers each run in their own process; the
test process is the HTTP client: the official Python SDK's, or raw ``http.client`` requests.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import finish, wait_for
from http_support import (
    LEGACY,
    MODERN,
    HttpDaemon,
    answer_of,
    free_port,
    initialize_body,
    open_stream,
    post_headers,
    request,
    start_http_daemon,
    start_session,
    troupe_sid,
)


@pytest.fixture(scope="module")
def front() -> Iterator[HttpDaemon]:
    metrics = free_port()
    http = start_http_daemon(
        "max_body_bytes = 65536\n", everything=False, daemon=f'metrics_address = "127.0.0.1:{metrics}"\n'
    )
    http.metrics_port = metrics
    yield http
    finish(http.daemon)


def call(port: int, sid: str, msg_id: int, name: str, arguments: dict[str, Any], meta: dict[str, Any] | None = None):
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    if meta:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": msg_id, "method": "tools/call", "params": params}


def add_works(port: int, sid: str, msg_id: int) -> None:
    """The session ``sid`` still answers ``add`` correctly."""
    stream = open_stream(
        port, "POST", "/mcp/example", call(port, sid, msg_id, "add", {"a": msg_id, "b": 1}), post_headers(sid)
    )
    assert stream.status == 200
    answer = stream.until_answer(msg_id)[-1].message()
    stream.close()
    assert answer["result"]["structuredContent"] == {"result": msg_id + 1}


def stats(http: HttpDaemon) -> dict[str, Any]:
    with http.daemon.client(timeout=10) as client:
        return client.control("stats")


def hand_front(
    front: HttpDaemon, port: int, *args: str, stdout: int | None = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """``troupe http`` run by hand against the fixture's daemon, on ``port``, with ``args``."""
    command = [sys.executable, "-m", "mcp_troupe.actors", "http", "--endpoint", front.daemon.front]
    return subprocess.Popen(
        [*command, "--listen", f"127.0.0.1:{port}", *args],
        env=front.daemon.env,
        stdout=stdout,
        stderr=subprocess.STDOUT,
    )


def wait_listening(port: int, path: str) -> None:
    def up() -> bool:
        try:
            return request(port, "GET", path)[0] > 0
        except OSError:
            return False

    wait_for(up, 20, f"the front on port {port} to serve")


# -- the official SDK client -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_the_sdk_http_client_gets_tools_progress_sampling_elicitation_roots_and_cancellation(
    front: HttpDaemon, mode: str
) -> None:
    from mcp import Client as SdkClient
    from mcp.types import CreateMessageResult, ElicitResult, ListRootsResult, Root, TextContent

    asked: dict[str, Any] = {}

    async def elicit(_ctx: Any, params: Any) -> ElicitResult:
        asked["elicitation"] = params.message
        return ElicitResult(action="accept", content={"answer": "blue"})

    async def sample(_ctx: Any, params: Any) -> CreateMessageResult:
        asked["sampling"] = params.messages[0].content.text
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text="forty-two"), model="m")

    async def roots(_ctx: Any) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri="file:///srv/project")])

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {"progress": []}

        async def on_progress(progress: float, total: float | None, _message: str | None) -> None:
            seen["progress"].append((progress, total))

        async with SdkClient(
            front.url(), mode=mode, elicitation_callback=elicit, sampling_callback=sample, list_roots_callback=roots
        ) as client:
            seen["add"] = (await client.call_tool("add", {"a": 2, "b": 3})).structured_content
            seen["tools"] = sorted(t.name for t in (await client.list_tools()).tools)
            slept = await client.call_tool("sleep", {"seconds": 2}, progress_callback=on_progress)
            seen["sleep"] = slept.content[0].text
            seen["ask_user"] = (await client.call_tool("ask_user", {"question": "colour?"})).content[0].text
            seen["ask_llm"] = (await client.call_tool("ask_llm", {"prompt": "meaning?"})).content[0].text
            seen["roots"] = (await client.call_tool("list_roots", {})).content[0].text
            with anyio.move_on_after(0.5) as scope:
                await client.call_tool("sleep", {"seconds": 30})
            seen["cancelled_in_time"] = scope.cancelled_caught
            with anyio.fail_after(20):
                while (await client.call_tool("cancelled_sleeps", {})).content[0].text != "1":
                    await anyio.sleep(0.05)
            seen["cancelled_seen_by_server"] = True
        return seen

    seen = asyncio.run(scenario())
    assert seen["add"] == {"result": 5}
    assert {"add", "ask_llm", "ask_user", "list_roots", "sleep"} <= set(seen["tools"])
    assert seen["sleep"] == "slept 2.0s"
    assert seen["progress"] == [(1.0, 2.0), (2.0, 2.0)]
    assert seen["ask_user"] == "answer: blue" and asked["elicitation"] == "colour?"
    assert seen["ask_llm"] == "forty-two" and asked["sampling"] == "meaning?"
    assert seen["roots"] == "file:///srv/project"
    assert seen["cancelled_in_time"] and seen["cancelled_seen_by_server"]


# -- resumption --------------------------------------------------------------------------


def test_a_dropped_stream_resumed_with_last_event_id_loses_no_event_and_repeats_none(front: HttpDaemon) -> None:
    port = front.port
    sid = start_session(port)
    body = call(port, sid, 7, "sleep", {"seconds": 3}, {"progressToken": "p"})
    stream = open_stream(port, "POST", "/mcp/example", body, post_headers(sid))
    assert stream.status == 200 and stream.header(
        "content-type",
    ).startswith("text/event-stream")
    priming = stream.next()
    assert priming is not None and priming.id and priming.data == "" and priming.retry
    first = stream.next()
    assert first is not None and first.message()["method"] == "notifications/progress"
    assert first.message()["params"]["progress"] == 1.0
    stream.close()  # the connection drops in the middle of the call

    resumed = open_stream(
        port,
        "GET",
        "/mcp/example",
        headers={
            "Accept": "text/event-stream",
            "Mcp-Session-Id": sid,
            "MCP-Protocol-Version": LEGACY,
            "Last-Event-ID": first.id or "",
        },
    )
    assert resumed.status == 200
    rest = [e.message() for e in resumed.until_answer(7) if e.data]
    resumed.close()
    assert [m["params"]["progress"] for m in rest if m.get("method") == "notifications/progress"] == [2.0, 3.0]
    answers = [m for m in rest if m.get("id") == 7]
    assert len(answers) == 1 and answers[0]["result"]["content"][0]["text"] == "slept 3.0s"
    ids = [e.id for e in resumed.events]
    assert len(set(ids)) == len(ids) and first.id not in ids


def test_messages_for_the_standalone_stream_wait_for_the_get_that_reads_them(front: HttpDaemon) -> None:
    """With no GET open, a server-to-client request with no single request to relate to is held in the
    session's log and delivered when the GET stream opens."""
    port = front.port
    sid = start_session(port, capabilities={"roots": {}})
    # two calls in flight: the roots/list the second one sends relates to neither alone -> standalone stream
    slow = open_stream(port, "POST", "/mcp/example", call(port, sid, 20, "sleep", {"seconds": 2}), post_headers(sid))
    assert slow.status == 200
    roots = open_stream(port, "POST", "/mcp/example", call(port, sid, 21, "list_roots", {}), post_headers(sid))
    assert roots.status == 200
    standalone = open_stream(
        port,
        "GET",
        "/mcp/example",
        headers={"Accept": "text/event-stream", "Mcp-Session-Id": sid, "MCP-Protocol-Version": LEGACY},
    )
    assert standalone.status == 200
    while (event := standalone.next()) is not None and not event.data:
        pass
    assert event is not None
    asked = event.message()
    assert asked["method"] == "roots/list"
    status, _, _ = request(
        port,
        "POST",
        "/mcp/example",
        {"jsonrpc": "2.0", "id": asked["id"], "result": {"roots": [{"uri": "file:///x"}]}},
        post_headers(sid),
    )
    assert status == 202
    assert roots.until_answer(21)[-1].message()["result"]["content"][0]["text"] == "file:///x"
    assert slow.until_answer(20)[-1].message()["result"]["content"][0]["text"] == "slept 2.0s"
    for stream in (slow, roots, standalone):
        stream.close()


# -- sessions ----------------------------------------------------------------------------


def test_delete_ends_the_session_and_its_id_then_gets_404(front: HttpDaemon) -> None:
    sid = start_session(front.port)
    with front.daemon.client() as client:
        assert client.control("sessions.show", {"sid": troupe_sid(sid)})["session"]["sid"] == troupe_sid(sid)
    status, _, _ = request(front.port, "DELETE", "/mcp/example", headers={"Mcp-Session-Id": sid})
    assert status == 200
    status, _, body = request(
        front.port, "POST", "/mcp/example", call(0, sid, 3, "add", {"a": 1, "b": 1}), post_headers(sid)
    )
    assert status == 404 and json.loads(body)["error"]["code"] == -32600

    def gone() -> bool:
        with front.daemon.client() as client:
            return sid not in {s["sid"] for s in client.control("sessions.list")["sessions"]}

    wait_for(gone, 10, "the daemon to close the deleted session")


def test_an_unknown_server_gets_404_and_a_missing_session_id_400(front: HttpDaemon) -> None:
    status, _, body = request(front.port, "POST", "/mcp/nosuch", initialize_body(), post_headers(version=None))
    assert status == 404 and json.loads(body)["error"]["data"]["code"] == "unknown_server"
    status, _, body = request(
        front.port, "POST", "/mcp/example", call(0, "", 2, "add", {"a": 1, "b": 1}), post_headers()
    )
    assert status == 400 and "Mcp-Session-Id" in json.loads(body)["error"]["message"]


# -- bad input ---------------------------------------------------------------------------


def _bad_requests(port: int, sid: str) -> list[tuple[str, tuple[int, dict[str, str], bytes], int, int | None]]:
    """(what, response, expected status, expected JSON-RPC code)"""
    good = call(port, sid, 99, "add", {"a": 1, "b": 2})
    plain = {"Content-Type": "application/json", "Mcp-Session-Id": sid, "MCP-Protocol-Version": LEGACY}
    modern_meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
    modern = {"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {"_meta": modern_meta}}
    return [
        ("no Accept", request(port, "POST", "/mcp/example", good, plain), 406, -32600),
        (
            "Accept without SSE",
            request(port, "POST", "/mcp/example", good, {**plain, "Accept": "application/json"}),
            406,
            -32600,
        ),
        (
            "wrong Content-Type",
            request(port, "POST", "/mcp/example", good, post_headers(sid, **{"Content-Type": "text/plain"})),
            415,
            -32600,
        ),
        ("not JSON", request(port, "POST", "/mcp/example", raw=b"{nope", headers=post_headers(sid)), 400, -32700),
        ("not JSON-RPC", request(port, "POST", "/mcp/example", {"hello": 1}, post_headers(sid)), 400, -32600),
        ("a batch", request(port, "POST", "/mcp/example", [good, good], post_headers(sid)), 400, -32600),
        ("an unknown session", request(port, "POST", "/mcp/example", good, post_headers("x" * 22)), 404, -32600),
        (
            "a bad protocol version",
            request(port, "POST", "/mcp/example", good, post_headers(sid, version="1999-01-01")),
            400,
            -32600,
        ),
        (
            "a foreign Origin",
            request(port, "POST", "/mcp/example", good, post_headers(sid, Origin="https://evil.example")),
            403,
            -32600,
        ),
        (
            "a rebinding Host",
            request(port, "POST", "/mcp/example", good, post_headers(sid, Host="evil.example:80")),
            403,
            -32600,
        ),
        (
            "an oversize body",
            request(
                port, "POST", "/mcp/example", raw=b" " * 70_000 + json.dumps(good).encode(), headers=post_headers(sid)
            ),
            413,
            -32600,
        ),
        (
            "2026 header contradicting the body",
            request(port, "POST", "/mcp/example", modern, post_headers(version=MODERN, **{"Mcp-Method": "tools/call"})),
            400,
            -32020,
        ),
        (
            "2026 version header contradicting _meta",
            request(
                port, "POST", "/mcp/example", modern, post_headers(version="2025-11-25", **{"Mcp-Method": "tools/list"})
            ),
            400,
            -32020,
        ),
        (
            "2026 request without _meta",
            request(
                port,
                "POST",
                "/mcp/example",
                {"jsonrpc": "2.0", "id": 6, "method": "server/discover"},
                post_headers(version=MODERN, **{"Mcp-Method": "server/discover"}),
            ),
            400,
            -32602,
        ),
        (
            "a GET without SSE in Accept",
            request(port, "GET", "/mcp/example", headers={"Mcp-Session-Id": sid, "Accept": "application/json"}),
            406,
            -32600,
        ),
        (
            "a bad Last-Event-ID",
            request(
                port,
                "GET",
                "/mcp/example",
                headers={"Mcp-Session-Id": sid, "Accept": "text/event-stream", "Last-Event-ID": "../../etc"},
            ),
            400,
            -32600,
        ),
    ]


def test_bad_input_gets_its_stable_refusal_while_another_session_keeps_working(front: HttpDaemon) -> None:
    port = front.port
    other = start_session(port)
    sid = start_session(port)
    failures = []
    for n, (what, (status, _headers, body), expected, code) in enumerate(_bad_requests(port, sid)):
        if status != expected:
            failures.append(f"{what}: HTTP {status}, expected {expected}: {body[:200]!r}")
            continue
        error = json.loads(body)["error"]
        if error["code"] != code or not error["message"]:
            failures.append(f"{what}: JSON-RPC {error}, expected code {code}")
        add_works(port, other, 100 + n)
    assert not failures, "\n".join(failures)
    add_works(port, sid, 300)  # the session the bad requests named is unharmed too

    def counted() -> dict[str, int]:
        http = stats(front)["http"]
        wanted = ("refused:bad_accept", "refused:not_json", "refused:batch", "refused:bad_origin", "refused:too_large")
        return http if all(http.get(name, 0) >= 1 for name in wanted) else {}

    counts = wait_for(counted, 10, "the front's refusals in the daemon's stats")
    assert counts["refused:header_mismatch"] >= 2 and counts["refused:unknown_session"] >= 1
    assert front.metrics_port is not None
    status, _, exposition = request(front.metrics_port, "GET", "/metrics")
    assert status == 200
    lines = exposition.decode().splitlines()
    batch = [line for line in lines if line.startswith('troupe_http_total{what="refused:batch"}')]
    assert batch and float(batch[0].split()[-1]) >= 1, [line for line in lines if "troupe_http" in line]


# -- bearer tokens and the front run by hand ---------------------------------------------


def test_bearer_tokens_admit_by_name_and_bind_each_session_to_its_token(front: HttpDaemon, tmp_path: Path) -> None:
    tokens = {"alice": secrets.token_urlsafe(24), "bob": secrets.token_urlsafe(24)}
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("# name token\n" + "".join(f"{n} {t}\n" for n, t in tokens.items()))
    port = free_port()
    process = hand_front(front, port, "--tokens-file", str(tokens_file), stdout=subprocess.PIPE)
    try:
        wait_listening(port, "/mcp/example")
        status, headers, body = request(port, "POST", "/mcp/example", initialize_body(), post_headers(version=None))
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        assert "error=" not in headers["www-authenticate"] and json.loads(body)["error"]["code"] == -32600
        wrong = post_headers(version=None, Authorization="Bearer " + "z" * 32)
        status, headers, _ = request(port, "POST", "/mcp/example", initialize_body(), wrong)
        assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"]

        alice = {"Authorization": f"Bearer {tokens['alice']}"}
        bob = {"Authorization": f"Bearer {tokens['bob']}"}
        stream = open_stream(port, "POST", "/mcp/example", initialize_body(), post_headers(version=None, **alice))
        assert stream.status == 200
        sid = stream.header("mcp-session-id")
        stream.until_answer(1)
        stream.close()
        assert sid
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert request(port, "POST", "/mcp/example", initialized, post_headers(sid, **alice))[0] == 202
        body = call(port, sid, 2, "add", {"a": 2, "b": 2})
        status, _, _ = request(port, "POST", "/mcp/example", body, post_headers(sid, **bob))
        assert status == 404  # another token's session does not exist for bob
        status, got, payload = request(port, "POST", "/mcp/example", body, post_headers(sid, **alice))
        assert status == 200
        assert answer_of(got, payload, 2)["result"]["structuredContent"] == {"result": 4}

        with front.daemon.client() as client:
            shown = client.control("sessions.show", {"sid": troupe_sid(sid)})["session"]
        assert "via http 127.0.0.1:" in shown["client"] and "token alice" in shown["client"]
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0].decode()
    assert tokens["alice"] not in output and tokens["bob"] not in output


# -- limits ------------------------------------------------------------------------------


def test_limits_answer_with_their_json_rpc_errors_and_retry_after() -> None:
    http = start_http_daemon(
        '[limits]\nmax_sessions = 2\non_session_limit = "refuse"\nrate_per_session = 0.01\nrate_burst = 1\n',
        everything=False,
    )
    try:
        port = http.port
        meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
        headers = post_headers(version=MODERN, **{"Mcp-Method": "tools/list"})

        def listing(msg_id: int) -> tuple[int, dict[str, str], bytes]:
            return request(
                port,
                "POST",
                "/mcp/example",
                {"jsonrpc": "2.0", "id": msg_id, "method": "tools/list", "params": {"_meta": meta}},
                headers,
            )

        status, _, _ = listing(1)
        assert status == 200
        status, got, body = listing(2)  # the same pooled session, within its rate
        assert status == 429 and int(got["retry-after"]) >= 1
        error = json.loads(body)["error"]
        assert error["code"] == -32011 and error["data"]["retry_after_ms"] > 0 and json.loads(body)["id"] == 2

        start_session(port)  # with the pooled one, max_sessions is reached
        status, got, body = request(port, "POST", "/mcp/example", initialize_body(), post_headers(version=None))
        assert status == 503 and got["retry-after"] == "1"
        assert json.loads(body)["error"]["data"]["code"] == "too_many_sessions"
    finally:
        finish(http.daemon)


def test_prefix_and_default_server_choose_the_paths(front: HttpDaemon) -> None:
    port = free_port()
    process = hand_front(front, port, "--prefix", "/api/", "--default-server", "example")
    try:
        wait_listening(port, "/api")
        for path in ("/api", "/api/example"):
            status, headers, _ = request(port, "POST", path, initialize_body(), post_headers(version=None))
            assert status == 200 and headers.get("mcp-session-id"), path
        status, _, body = request(port, "POST", "/mcp/example", initialize_body(), post_headers(version=None))
        assert status == 404 and "/api/<server>" in json.loads(body)["error"]["message"]
        status, _, body = request(port, "PUT", "/api/example", initialize_body(), post_headers(version=None))
        assert status == 405 and json.loads(body)["error"]["code"] == -32600
    finally:
        process.terminate()
        process.wait(10)


def test_many_clients_at_once_all_get_their_sessions_and_answers(front: HttpDaemon) -> None:
    """32 HTTP clients initialize and call at the same moment (a burst like this once left the front's reader
    asleep with the daemon's answers waiting: a send had consumed the edge of the socket's descriptor)."""
    from concurrent.futures import ThreadPoolExecutor

    def client(n: int) -> int:
        sid = start_session(front.port)
        status, headers, body = request(
            front.port, "POST", "/mcp/example", call(0, sid, n, "add", {"a": n, "b": 1}), post_headers(sid)
        )
        assert status == 200
        return int(answer_of(headers, body, n)["result"]["structuredContent"]["result"])

    with ThreadPoolExecutor(32) as pool:
        assert sorted(pool.map(client, range(32), timeout=120)) == [n + 1 for n in range(32)]
