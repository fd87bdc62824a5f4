"""Authenticated links, session ownership and control rights, against a running daemon (docs/security.rst).

The daemon runs in its own process with a tcp front socket and CurveZMQ keys
made by ``troupe keys generate``; clients, attackers and adapters are the test
process, raw ZeroMQ sockets in it, or processes of their own.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from conftest import ROOT, RunningDaemon, finish, free_tcp_endpoint, start_daemon, wait_for

from mcp_troupe.transport.client import Client, DaemonUnavailable, FrameRefused, Session
from mcp_troupe.transport.keys import Credentials, generate
from mcp_troupe.transport.wire import jsonrpc
from mcp_troupe.transport.wire.frames import encode

TROUPE = Path(sys.executable).parent / "troupe"


@dataclass
class Keys:
    """A daemon's state directory with its key pair, and key pairs of peers made beside it."""

    root: Path
    server_key: str

    @property
    def state(self) -> Path:
        return self.root / "state"

    def peer(self, name: str, allowed_in: str | None = "clients") -> str:
        """A key pair for a peer; its public key copied into ``state/<allowed_in>`` (None: allowed nowhere).
        Returns the path of its ``.key_secret`` file."""
        home = self.root / "peers" / name
        generate(home, name)
        if allowed_in is not None:
            (self.state / allowed_in).mkdir(parents=True, exist_ok=True)
            shutil.copy(home / f"{name}.key", self.state / allowed_in / f"{name}.key")
        return str(home / f"{name}.key_secret")

    def creds(self, key_file: str) -> dict[str, str]:
        return {"server_key": self.server_key, "key_file": key_file}


def make_keys(tmp_path: Path) -> Keys:
    state = tmp_path / "state"
    out = subprocess.run(
        [str(TROUPE), "keys", "generate", "--dir", str(state)], capture_output=True, text=True, timeout=30, check=True
    )
    return Keys(tmp_path, out.stdout.strip())


def secure_daemon(keys: Keys, key_file: str, *args: str, servers: int = 1) -> RunningDaemon:
    return start_daemon(
        list(args),
        front=free_tcp_endpoint(),
        insecure_tcp=False,
        env={"TROUPE_STATE_DIR": str(keys.state)},
        keys=keys.creds(key_file),
        servers=servers,
    )


def echo(session: Session, text: str) -> str:
    result = session.request("tools/call", {"name": "echo", "arguments": {"text": text}})
    return str(result["structuredContent"]["result"])


def config(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "troupe.toml"
    path.write_text(text)
    return ["--config", str(path)]


# -- keys and the insecure-tcp guard ------------------------------------------------------------------------


def test_keys_generate_writes_a_private_key_pair_prints_its_public_key_and_will_not_overwrite_it(
    tmp_path: Path,
) -> None:
    keys = make_keys(tmp_path)
    secret = keys.state / "daemon.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.state.stat().st_mode) == 0o700
    assert len(keys.server_key) == 40 and keys.server_key in (keys.state / "daemon.key").read_text()
    assert keys.server_key not in secret.read_text().split("secret-key")[1]
    shown = subprocess.run(
        [str(TROUPE), "keys", "show", "--dir", str(keys.state)], capture_output=True, text=True, timeout=30
    )
    assert shown.stdout.strip() == keys.server_key
    again = subprocess.run(
        [str(TROUPE), "keys", "generate", "--dir", str(keys.state)], capture_output=True, text=True, timeout=30
    )
    assert again.returncode == 2 and "--force" in again.stderr
    assert (keys.state / "daemon.key").read_text().count(keys.server_key) == 1


def test_a_tcp_endpoint_without_keys_does_not_start_unless_insecure_tcp_is_allowed(tmp_path: Path) -> None:
    refused = start_daemon(front=free_tcp_endpoint(), insecure_tcp=False, ready=False)
    try:
        assert refused.process.wait(30) == 3
        assert "troupe keys generate" in refused.log() and "allow_insecure_tcp" in refused.log()
    finally:
        shutil.rmtree(refused.runtime_dir, ignore_errors=True)
    insecure = start_daemon(
        config(tmp_path, "[security]\nallow_insecure_tcp = true\n"), front=free_tcp_endpoint(), servers=0
    )
    try:
        assert "INSECURE" in insecure.log()
        with insecure.client() as client:
            assert client.control("sessions.list")["sessions"] == []
            with pytest.raises(FrameRefused) as refusal:
                client.control("sessions.cleanup", {"older_than_s": 0})  # no operator without a key
            assert refusal.value.code == "forbidden"
    finally:
        finish(insecure)


# -- who gets in ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_only_allowed_keys_get_in_and_a_key_removed_and_reloaded_is_refused_while_others_carry_on(
    tmp_path: Path,
) -> None:
    keys = make_keys(tmp_path)
    alice, bob = keys.peer("alice"), keys.peer("bob")
    stranger = keys.peer("stranger", allowed_in=None)
    impostor = keys.root / "impostor"
    generate(impostor, "daemon")  # the wrong daemon key
    daemon = secure_daemon(keys, alice)
    endpoint = daemon.front
    attempts = {
        "unknown key": {**keys.creds(stranger)},
        "no key": {},
        "wrong server key": {"server_key": str(impostor / "daemon.key"), "key_file": alice},
    }
    expected = {"unknown key": "refused this peer's key", "no key": "CurveZMQ", "wrong server key": "public key"}
    try:
        for what, creds in attempts.items():
            got_in = 0
            for _ in range(100):
                try:
                    with Client(endpoint, timeout=5, connect_timeout=5, **creds) as client:
                        client.open("example")
                        got_in += 1
                except DaemonUnavailable as exc:
                    assert expected[what] in str(exc), (what, str(exc))
            assert got_in == 0, f"{what}: {got_in} of 100 attempts got in"
        with daemon.client() as admin:
            stats = admin.control("stats")
            assert stats["connections"]["front_refused_key"] == 100
            assert stats["sessions"]["opened"] == 0
        assert daemon.log().count("is not among the allowed keys") <= 10, "refusals flood the log"

        with (
            Client(endpoint, timeout=20, **keys.creds(alice)) as a,
            Client(endpoint, timeout=20, **keys.creds(bob)) as b,
        ):
            sa, sb = a.open("example"), b.open("example")
            sa.initialize()
            sb.initialize()
            assert echo(sa, "alice") == "alice" and echo(sb, "bob") == "bob"

            (keys.state / "clients" / "alice.key").unlink()
            daemon.process.send_signal(signal.SIGHUP)
            wait_for(lambda: "keys reloaded" in daemon.log(), 20, "the reload")
            wait_for(lambda: sa.client._lost or _closed(sa), 20, "alice's live connection to be cut off")
            assert echo(sb, "still here") == "still here"
            assert "key_revoked" in daemon.log() or "lost its key" in daemon.log()
            for _ in range(20):
                with (
                    pytest.raises(DaemonUnavailable, match="refused this peer's key"),
                    Client(endpoint, timeout=5, **keys.creds(alice)) as again,
                ):
                    again.open("example")
            assert echo(sb, "and still") == "and still"
            sb.close()
    finally:
        finish(daemon)


def _closed(session: Session) -> bool:
    try:
        session.request("ping", timeout=1)
    except Exception:  # noqa: BLE001 - any failure means the connection no longer serves
        return True
    return False


@pytest.mark.timeout(120)
def test_a_rogue_adapter_cannot_register_and_gets_no_session(
    tmp_path: Path, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    keys = make_keys(tmp_path)
    good = keys.peer("good", allowed_in="adapters/remote")
    other = keys.peer("other", allowed_in="adapters/other")
    rogue = keys.peer("rogue", allowed_in=None)
    alice = keys.peer("alice")
    back = free_tcp_endpoint()
    daemon = secure_daemon(keys, alice, *config(tmp_path, f'[daemon]\nback = "{back}"\n'), servers=0)
    command = ["--", sys.executable, "-m", "mcp_troupe.examples.server"]

    def adapter(key_file: str | None, server_key: str = keys.server_key) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in daemon.env.items() if not k.startswith("TROUPE_KEY") and k != "TROUPE_SERVER_KEY"}
        flags = ["--server-key", server_key, "--key-file", key_file] if key_file else []
        return subprocess.Popen(
            [str(TROUPE), "adapter", "remote", "--endpoint", back, *flags, *command],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
        )

    try:
        for key_file in (rogue, None):
            process = adapter(key_file)
            _out, err = process.communicate(timeout=30)
            assert process.returncode == 3, err.decode()
            assert b"cannot register" in err
        # A key allowed for another server: let in, but not for this one.
        process = adapter(other)
        wait_for(lambda: "may not serve it" in daemon.log(), 20, "the refused registration")
        process.send_signal(signal.SIGTERM)
        process.wait(15)
        assert daemon.health()["servers"].get("remote", 0) == 0
        with daemon.client() as client:
            with pytest.raises(FrameRefused) as refused:
                client.open("remote")
            assert refused.value.code == "unknown_server"

        honest = adapter(good)
        try:
            wait_for(lambda: daemon.health()["servers"].get("remote") == 1, 20, "the allowed adapter")
            with daemon.client() as client:
                sessions = [client.open("remote") for _ in range(3)]
                for i, session in enumerate(sessions):
                    session.initialize()
                    assert echo(session, f"s{i}") == f"s{i}"
                listed = client.control("sessions.list")["sessions"]
                assert len({s["pid"] for s in listed}) == 3
            # A raw peer with no key at all is not even let in on the back socket.
            raw = ctx.socket(zmq.DEALER)
            raw.linger = 0
            raw.connect(back)
            raw.send(encode("register", server="remote", capacity=0))
            assert raw.poll(1500) == 0
            raw.close()
            assert daemon.health()["servers"]["remote"] == 1
        finally:
            honest.send_signal(signal.SIGTERM)
            honest.wait(15)
    finally:
        finish(daemon)


# -- session ownership ---------------------------------------------------------------------------------------


def raw_peer(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, creds: dict[str, str]) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    resolved = Credentials.resolve(creds["server_key"], creds["key_file"], environ={})
    assert resolved is not None
    resolved.apply(sock)
    sock.connect(endpoint)
    return sock


def replies(sock: zmq.Socket[bytes], count: int, timeout: float = 30) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        if sock.poll(100):
            got.append(msgpack.unpackb(sock.recv()))
    return got


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_another_client_that_knows_a_session_id_changes_nothing_and_the_owner_reattaches_with_its_token(
    tmp_path: Path, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    keys = make_keys(tmp_path)
    alice, mallory, operator = keys.peer("alice"), keys.peer("mallory"), keys.peer("op", allowed_in="operators")
    daemon = secure_daemon(keys, operator)
    try:
        a = Client(daemon.front, timeout=20, **keys.creds(alice))
        session = a.open("example")
        session.initialize()
        assert echo(session, "before") == "before"
        sid, token = session.sid, session.token
        assert len(token) >= 22  # 128 bits, URL-safe base64
        admin = daemon.client()
        seen_before = admin.control("sessions.show", {"sid": sid})["session"]["frames"]["client_to_server"]

        b = raw_peer(ctx, daemon.front, keys.creds(mallory))
        attack = jsonrpc.request(1, "tools/call", {"name": "echo", "arguments": {"text": "forged"}})
        codes: dict[str, int] = {}
        for i in range(1000):
            b.send(encode("mcp", sid=sid, msg={**attack, "id": i}))
            b.send(encode("close", sid=sid, ref=f"c{i}"))
            b.send(encode("ctl", ref=f"k{i}", op="sessions.close", args={"sid": sid}))
            b.send(encode("ctl", ref=f"s{i}", op="sessions.show", args={"sid": sid}))
            if i % 100 == 0:
                assert echo(session, f"during {i}") == f"during {i}"
        for reply in replies(b, 4000):
            code = reply.get("code") or reply.get("error", {}).get("code")
            codes[code] = codes.get(code, 0) + 1
        assert codes == {"not_owner": 2000, "forbidden": 1000, "unknown_session": 1000}, codes
        listed = Client(daemon.front, timeout=20, **keys.creds(mallory))
        assert listed.control("sessions.list")["sessions"] == []  # a plain client sees only its own
        listed.close()

        assert echo(session, "after") == "after"
        shown = admin.control("sessions.show", {"sid": sid})["session"]
        assert shown["frames"]["client_to_server"] - seen_before == 11  # A's own ten "during" and one "after"
        assert shown["state"] == "active" and shown["pending"] == []
        admin.close()

        # A wrong token, and the right token from another key, are refused.
        with Client(daemon.front, timeout=20, **keys.creds(alice)) as wrong:
            with pytest.raises(FrameRefused) as refused:
                wrong.attach(sid, "x" * len(token))
            assert refused.value.code == "not_owner"
        with Client(daemon.front, timeout=20, **keys.creds(mallory)) as thief:
            with pytest.raises(FrameRefused) as refused:
                thief.attach(sid, token)
            assert refused.value.code == "not_owner" and "another key" in refused.value.message

        # The owner, on a new socket, takes its session over and carries on; the old socket is told.
        a2 = Client(daemon.front, timeout=20, **keys.creds(alice))
        moved = a2.attach(sid, token)
        assert echo(moved, "on a new socket") == "on a new socket"
        wait_for(lambda: _pumped(a) and session.closed, 10, "the old connection to be told")
        assert session.close_reason == "attached_elsewhere"
        a.close()
        assert echo(moved, "old socket closed") == "old socket closed"
        assert moved.close() == "client"
        a2.close()
        b.close()
        log = daemon.log()
        assert token not in log
    finally:
        finish(daemon)


def _pumped(client: Client) -> bool:
    try:
        client._pump(time.monotonic() + 0.2, "reading")
    except Exception:  # noqa: BLE001 - a timeout: nothing came
        pass
    return True


KILLED_CLIENT = """
import json, signal, sys
from mcp_troupe.transport.client import Client
from mcp_troupe.transport.wire import jsonrpc
client = Client(sys.argv[1], timeout=20)
session = client.open("example")
session.initialize()
session.send(jsonrpc.request(7, "tools/call", {"name": "sleep", "arguments": {"seconds": 10.0}}))
print(json.dumps({"sid": session.sid, "token": session.token}), flush=True)
signal.pause()  # until the test kills it
"""


@pytest.mark.timeout(120)
def test_a_killed_clients_session_waits_for_its_token_and_loses_no_message(
    tmp_path: Path, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    daemon = start_daemon(["--reattach-grace", "30", "--audit-log", str(tmp_path / "audit.jsonl")])
    try:
        owner = subprocess.Popen(
            [sys.executable, "-c", KILLED_CLIENT, daemon.front], stdout=subprocess.PIPE, env=daemon.env, cwd=ROOT
        )
        assert owner.stdout is not None
        try:
            opened = json.loads(owner.stdout.readline())
        finally:
            owner.kill()
            owner.wait(10)
        wait_for(lambda: "wait 30s for it" in daemon.log(), 20, "the session to be detached")
        with daemon.client() as client:
            detached = client.control("sessions.show", {"sid": opened["sid"]})["session"]
            assert [p["method"] for p in detached["pending"]] == ["tools/call"]  # its answer comes while away

        # A peer that picks the dead owner's routing id (or any) is a stranger: ids are the daemon's.
        for chosen in (b"owner", os.urandom(16)):
            raw = ctx.socket(zmq.DEALER)
            raw.linger = 0
            raw.setsockopt(zmq.ROUTING_ID, chosen)
            raw.connect(daemon.front)
            raw.send(encode("mcp", sid=opened["sid"], msg=jsonrpc.request(9, "ping")))
            assert raw.poll(10_000)
            assert msgpack.unpackb(raw.recv())["code"] == "not_owner"
            raw.close()

        with daemon.client() as client:
            wait_for(
                lambda: client.control("sessions.show", {"sid": opened["sid"]})["session"]["pending"] == [],
                40,
                "the server to answer while the client is away",
            )
            session = client.attach(opened["sid"], opened["token"])
            result = session.wait_result(7)
            assert result["structuredContent"]["result"].startswith("slept")
            assert echo(session, "back again") == "back again"
            session.close()
        audit = (tmp_path / "audit.jsonl").read_text()
        assert "session.attached" in audit
        assert opened["token"] not in audit and opened["token"] not in daemon.log()
    finally:
        finish(daemon)


def test_a_detached_session_closes_when_nobody_comes_back(tmp_path: Path) -> None:
    daemon = start_daemon(["--reattach-grace", "0.5"])
    try:
        client = daemon.client()
        session = client.open("example")
        session.initialize()
        sid = session.sid
        client.close()
        with daemon.client() as other:
            wait_for(lambda: sid not in {s["sid"] for s in other.control("sessions.list")["sessions"]}, 20, "close")
            closed = other.control("stats")["sessions"]["closed"]
            assert closed.get("client_gone") == 1, closed
    finally:
        finish(daemon)


# -- control rights ------------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_acting_control_operations_need_an_operator_key_and_reading_ones_do_not(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    alice, operator = keys.peer("alice"), keys.peer("op", allowed_in="operators")
    daemon = secure_daemon(keys, operator)
    try:
        with Client(daemon.front, timeout=20, **keys.creds(alice)) as plain, daemon.client() as admin:
            mine = plain.open("example")
            mine.initialize()
            theirs = admin.open("example")
            theirs.initialize()
            for op in ("stats", "health", "status", "servers"):
                assert plain.control(op) is not None
            assert [s["sid"] for s in plain.control("sessions.list")["sessions"]] == [mine.sid]
            assert {s["sid"] for s in admin.control("sessions.list")["sessions"]} == {mine.sid, theirs.sid}
            assert plain.control("sessions.show", {"sid": mine.sid})["session"]["sid"] == mine.sid
            for op, args in (
                ("sessions.close", {"sid": theirs.sid}),
                ("sessions.cleanup", {"older_than_s": 0}),
                ("security.reload", {}),
                ("inject_fault", {"target": "janitor"}),
            ):
                with pytest.raises(FrameRefused) as refused:
                    plain.control(op, args)
                assert refused.value.code == "forbidden" and "operator" in refused.value.message, op
            with pytest.raises(FrameRefused) as refused:
                admin.control("inject_fault", {"target": "janitor"})
            assert "fault injection is off" in refused.value.message
            assert admin.control("security.reload") == {"clients": 1, "operators": 1, "adapters": 0}
            assert admin.control("sessions.close", {"sid": mine.sid}) == {"closed": [mine.sid]}
            stats = admin.control("stats")
            assert echo(theirs, "fine") == "fine"
        assert "forbidden" in json.dumps(stats)
        secret = (keys.state / "daemon.key_secret").read_text().split("secret-key")[1].split('"')[1]
        assert secret not in daemon.log() and keys.server_key in (keys.state / "daemon.key").read_text()
        out = subprocess.run(
            [str(TROUPE), "sessions", "cleanup", "--older-than", "0s", "--endpoint", daemon.front,
             "--server-key", keys.server_key, "--key-file", alice],
            capture_output=True, text=True, timeout=30, env=daemon.env,
        )  # fmt: skip
        assert out.returncode == 1 and "needs operator rights" in out.stderr
    finally:
        finish(daemon)


@pytest.mark.timeout(120)
def test_troupe_connect_and_the_event_stream_take_keys_and_the_stream_only_an_operators(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    alice, operator = keys.peer("alice"), keys.peer("op", allowed_in="operators")
    events = free_tcp_endpoint()
    server = '[servers.example]\ncommand = ["' + sys.executable + '", "-m", "mcp_troupe.examples.server"]\n'
    daemon = secure_daemon(keys, operator, *config(tmp_path, f'[daemon]\nevents = "{events}"\n{server}'))
    try:
        readers = {
            name: subprocess.Popen(
                [
                    str(TROUPE),
                    "events",
                    "--events-endpoint",
                    events,
                    "--server-key",
                    keys.server_key,
                    "--key-file",
                    key_file,
                    "--topic",
                    "session.opened",
                ],
                stdout=subprocess.PIPE,
                env=daemon.env,
            )
            for name, key_file in (("operator", operator), ("plain", alice))
        }
        with daemon.client() as admin:
            wait_for(lambda: admin.control("stats")["connections"].get("events_refused_key", 0) >= 1, 20, "refusal")
        initialize = jsonrpc.request(1, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                                     "clientInfo": {"name": "t", "version": "1"}})  # fmt: skip
        lines = [initialize, jsonrpc.notification("notifications/initialized"), jsonrpc.request(2, "tools/list")]
        stdin = "".join(json.dumps(line) + "\n" for line in lines)
        command = [str(TROUPE), "connect", "example", "--endpoint", daemon.front]
        bare = subprocess.run(command, input="", capture_output=True, text=True, timeout=30, env=daemon.env)
        assert bare.returncode == 3 and "--server-key" in bare.stderr, bare.stderr
        opened = False
        for _ in range(20):  # the operator's subscription may reach the daemon after the first session opened
            keyed = subprocess.Popen(
                [*command, "--server-key", keys.server_key, "--key-file", alice],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=daemon.env,
            )  # fmt: skip
            assert keyed.stdin is not None and keyed.stdout is not None
            keyed.stdin.write(stdin)
            keyed.stdin.flush()
            answers = [json.loads(keyed.stdout.readline()) for _ in range(2)]
            keyed.stdin.close()
            assert keyed.wait(30) == 0
            by_id = {a["id"]: a for a in answers}
            assert sorted(by_id) == [1, 2] and "tools" in by_id[2].get("result", {}), answers
            reader = readers["operator"].stdout
            assert reader is not None
            if select.select([reader], [], [], 2.0)[0]:
                event = json.loads(reader.readline())
                assert event["server"] == "example" and "alice@" in event["client"]
                opened = True
                break
        assert opened, "the operator's event stream saw no session.opened"
        plain = readers["plain"].stdout
        assert plain is not None and not select.select([plain], [], [], 0.5)[0]
    finally:
        for reader in readers.values():
            reader.kill()
            reader.wait(10)
        finish(daemon)


def test_the_metrics_endpoint_listens_on_loopback_unless_told_otherwise() -> None:
    port = int(free_tcp_endpoint().rpartition(":")[2])
    daemon = start_daemon(["--metrics-address", str(port)])
    try:
        listening = [
            line.split()[1]
            for name in ("/proc/net/tcp", "/proc/net/tcp6")
            for line in Path(name).read_text().splitlines()[1:]
            if line.split()[3] == "0A" and line.split()[1].endswith(f":{port:04X}")
        ]
        assert listening == [f"0100007F:{port:04X}"], listening
    finally:
        finish(daemon)


def test_the_http_front_the_daemon_starts_reaches_a_curve_front_socket_with_the_daemons_key(tmp_path: Path) -> None:
    from http_support import answer_of, free_port, post_headers, request, start_session, troupe_sid

    keys = make_keys(tmp_path)
    operator = keys.peer("olga", "operators")
    port = free_port()
    daemon = secure_daemon(keys, operator, "--http", f"127.0.0.1:{port}")
    try:

        def up() -> bool:
            try:
                return request(port, "GET", "/mcp/example")[0] > 0
            except OSError:
                return False

        wait_for(up, 30, "the HTTP front to serve")
        sid = start_session(port)
        body = {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x"}},
        }
        status, headers, payload = request(port, "POST", "/mcp/example", body, post_headers(sid))
        assert status == 200 and answer_of(headers, payload, 3)["result"]["structuredContent"] == {"result": "x"}
        with daemon.client() as client:  # an operator sees it; it belongs to the daemon's key, not to a client's
            shown = client.control("sessions.show", {"sid": troupe_sid(sid)})["session"]
        assert "via http 127.0.0.1:" in shown["client"] and "daemon (http front)" in shown["client"]
    finally:
        finish(daemon)
