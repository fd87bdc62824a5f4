"""CurveZMQ key files and key directories (`mcp_troupe.transport.keys`), and what the hub's ZAP makes of them."""

from __future__ import annotations

import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from conftest import wait_for

from mcp_troupe.transport.hub.loop import FRONT, Hub, HubOptions
from mcp_troupe.transport.hub.peers import Admission, PeerTable
from mcp_troupe.transport.keys import (
    ANY_SERVER,
    OPERATOR,
    Credentials,
    KeyFileError,
    generate,
    load_ring,
    load_server_keys,
)


def pair(where: Path, name: str) -> tuple[bytes, Path]:
    return generate(where, name), where / f"{name}.key_secret"


def test_generate_writes_a_secret_only_its_owner_reads_and_refuses_to_overwrite(tmp_path: Path) -> None:
    public, secret = pair(tmp_path / "state", "daemon")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    keys = load_server_keys(tmp_path / "state")
    assert keys is not None and keys.public == public and len(keys.secret) == 40
    assert keys.secret.decode() not in repr(keys)
    with pytest.raises(KeyFileError, match="--force"):
        generate(tmp_path / "state", "daemon")
    assert generate(tmp_path / "state", "daemon", force=True) != public
    with pytest.raises(KeyFileError, match="key name"):
        generate(tmp_path, "../escape")


def test_a_secret_key_others_can_read_is_refused(tmp_path: Path) -> None:
    _, secret = pair(tmp_path, "daemon")
    secret.chmod(0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_server_keys(tmp_path)
    assert load_server_keys(tmp_path / "nothing-here") is None


def test_the_ring_gives_each_key_its_name_and_rights(tmp_path: Path) -> None:
    alice, _ = pair(tmp_path / "made", "alice")
    boss, _ = pair(tmp_path / "made", "boss")
    anywhere, _ = pair(tmp_path / "made", "anywhere")
    two, _ = pair(tmp_path / "made", "two")
    for name, where in (
        ("alice", "clients"),
        ("boss", "operators"),
        ("anywhere", "adapters"),
        ("two", "adapters/files"),
        ("two", "adapters/git"),
    ):
        (tmp_path / where).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "made" / f"{name}.key", tmp_path / where)
    ring = load_ring(tmp_path / "clients", tmp_path / "operators", tmp_path / "adapters")
    assert ring.front[alice].name == "alice" and ring.front[alice].rights == frozenset()
    assert ring.front[boss].rights == {OPERATOR}
    assert ring.back[anywhere].rights == {ANY_SERVER}
    assert ring.back[two].rights == {"files", "git"}
    assert alice not in ring.back and anywhere not in ring.front
    assert load_ring(tmp_path / "missing", None, None).front == {}


def test_a_bad_key_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "clients").mkdir()
    (tmp_path / "clients" / "broken.key").write_text('public-key = "not z85 at all"\n')
    with pytest.raises(KeyFileError, match=r"broken\.key"):
        load_ring(tmp_path / "clients", None, None)
    (tmp_path / "clients" / "broken.key").write_text("# no key here\n")
    with pytest.raises(KeyFileError, match=r"broken\.key"):
        load_ring(tmp_path / "clients", None, None)


def test_credentials_come_from_arguments_then_the_environment_and_need_both_keys(tmp_path: Path) -> None:
    server, _ = pair(tmp_path, "daemon")
    mine, secret = pair(tmp_path, "me")
    assert Credentials.resolve(environ={}) is None
    creds = Credentials.resolve(server.decode(), str(secret), environ={})
    assert creds is not None and (creds.server_key, creds.public) == (server, mine)
    assert creds.secret.decode() not in repr(creds)
    from_file = Credentials.resolve(str(tmp_path / "daemon.key"), str(secret), environ={})
    assert from_file is not None and from_file.server_key == server
    env = {"TROUPE_SERVER_KEY": server.decode(), "TROUPE_KEY_FILE": str(secret)}
    assert Credentials.resolve(environ=env) == creds
    with pytest.raises(KeyFileError, match="key file"):
        Credentials.resolve(server.decode(), None, environ={})
    with pytest.raises(KeyFileError, match="public key"):
        Credentials.resolve(None, str(secret), environ={})
    with pytest.raises(KeyFileError, match="only a public key"):
        Credentials.resolve(server.decode(), str(tmp_path / "me.key"), environ={})
    with pytest.raises(KeyFileError, match="neither"):
        Credentials.resolve("short", str(secret), environ={})


def test_revoking_a_key_forgets_its_connections_and_updates_the_others_rights() -> None:
    table = PeerTable()
    table.accepted_fd(5)
    table.accepted_fd(6)
    table.admitted(b"id-a", Admission("10.0.0.1", "CURVE", "alice", b"KEY-A", frozenset()), 0.0)
    table.admitted(b"id-b", Admission("10.0.0.2", "CURVE", "bob", b"KEY-B", frozenset()), 0.0)
    table.seen(b"id-a", 5)
    table.seen(b"id-b", 6)
    table.admitted(b"id-c", Admission("10.0.0.3", "CURVE", "alice", b"KEY-A"), 0.0)  # not seen yet
    rights = {b"KEY-B": frozenset({OPERATOR})}
    revoked = table.revoke(rights.get)
    assert [(c.identity, c.user) for c in revoked] == [(b"id-a", "alice")]
    assert b"id-a" not in table and table.seen(b"id-a", 5) is None, "what a revoked connection sends is dropped"
    bob = table.get(b"id-b")
    assert bob is not None and bob.rights == {OPERATOR}
    assert table.seen(b"id-c", None) is not None and table.get(b"id-c").user == "", "its admission was forgotten"  # type: ignore[union-attr]
    assert table.disconnected(5) is None, "its end is not reported twice"


class _Recorder:
    def __init__(self) -> None:
        self.front: list[tuple[bytes, bytes]] = []
        self.lost: list[tuple[bytes, str]] = []

    def on_front(self, peer: bytes, data: bytes) -> None:
        self.front.append((peer, data))

    def on_back(self, peer: bytes, data: bytes) -> None: ...

    def on_tick(self, now: float) -> None: ...

    def on_peer_lost(self, which: int, peer: bytes, reason: str) -> None:
        self.lost.append((peer, reason))

    def on_peer_blocked(self, which: int, peer: bytes, blocked: bool) -> None: ...


@pytest.fixture
def curve_hub(tmp_path: Path) -> Iterator[tuple[Hub, _Recorder, str, Path]]:
    generate(tmp_path / "state", "daemon")
    keys = load_server_keys(tmp_path / "state")
    for name, where in (("alice", "clients"), ("boss", "operators")):
        generate(tmp_path / "peers", name)
        (tmp_path / where).mkdir()
        shutil.copy(tmp_path / "peers" / f"{name}.key", tmp_path / where)
    generate(tmp_path / "peers", "mallory")
    ring = load_ring(tmp_path / "clients", tmp_path / "operators", None)
    hub = Hub(HubOptions(server_keys=keys, curve=frozenset({FRONT}), keys=ring, linger_ms=0))
    recorder = _Recorder()
    hub.start(recorder)
    endpoint = hub.bind(FRONT, "tcp://127.0.0.1:0")
    yield hub, recorder, endpoint, tmp_path
    hub.stop()


def _dealer(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, root: Path, name: str) -> zmq.Socket[bytes]:
    creds = Credentials.resolve(str(root / "state" / "daemon.key"), str(root / "peers" / f"{name}.key_secret"), {})
    assert creds is not None
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    creds.apply(sock)
    sock.connect(endpoint)
    return sock


def test_the_hub_lets_in_allowed_keys_with_their_rights_and_cuts_off_a_revoked_one(
    curve_hub: tuple[Hub, _Recorder, str, Path], ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    hub, recorder, endpoint, root = curve_hub
    alice, boss, mallory = (_dealer(ctx, endpoint, root, name) for name in ("alice", "boss", "mallory"))
    for sock in (alice, boss, mallory):
        sock.send(b"hello")
    wait_for(lambda: len(recorder.front) == 2, 10, "the two allowed peers' frames")
    wait_for(lambda: hub.stats().connections["front_refused_key"] == 1, 10, "mallory to be refused")
    peers = {hub.ask(lambda p=peer: hub.connection(FRONT, p)).user: peer for peer, _ in recorder.front}  # type: ignore[union-attr]
    assert set(peers) == {"alice", "boss"}
    assert hub.ask(lambda: hub.connection(FRONT, peers["boss"])).rights == {OPERATOR}  # type: ignore[union-attr]
    assert hub.ask(lambda: hub.connection(FRONT, peers["alice"])).rights == frozenset()  # type: ignore[union-attr]

    (root / "clients" / "alice.key").unlink()
    hub.set_keys(load_ring(root / "clients", root / "operators", None))
    wait_for(lambda: recorder.lost == [(peers["alice"], "key_revoked")], 10, "alice to be cut off")
    alice.send(b"after")
    boss.send(b"after")
    wait_for(lambda: len(recorder.front) == 3, 10, "boss's second frame")
    wait_for(lambda: hub.stats().dropped["front_from_ended_peer"] == 1, 10, "alice's frame to be dropped")
    assert recorder.front[-1] == (peers["boss"], b"after")
    again = _dealer(ctx, endpoint, root, "alice")
    again.send(b"let me in")
    wait_for(lambda: hub.stats().connections["front_refused_key"] == 2, 10, "alice refused from now on")
    for sock in (alice, boss, mallory, again):
        sock.close()
