"""The sans-IO pieces that tell the hub who its peers are: ZAP messages and the connection table."""

from __future__ import annotations

import struct

import pytest

from mcp_troupe.transport.hub import zap
from mcp_troupe.transport.hub.peers import ENDED_KEPT, Admission, PeerTable, address_pid, address_uid


def _request(domain: bytes = b"front", address: bytes = b"localhost:1000:1000:4242") -> list[bytes]:
    return [b"session-7", b"", b"1.0", b"1", domain, address, b"", b"NULL"]


def test_a_zap_request_is_parsed_and_answered_with_the_routing_id_to_use() -> None:
    request = zap.parse_request(_request())
    assert (request.domain, request.address, request.mechanism, request.credentials) == (
        "front",
        "localhost:1000:1000:4242",
        "NULL",
        (),
    )
    identity = zap.new_identity()
    parts = zap.reply(request, identity=identity, user_id="alice")
    assert parts[:7] == [b"session-7", b"", b"1.0", b"1", b"200", b"OK", b"alice"]
    metadata = parts[7]
    assert metadata == b"\x08Identity" + struct.pack(">I", len(identity)) + identity
    refused = zap.reply(request, identity=None, status=400, text="no")
    assert refused[4:] == [b"400", b"no", b"", b""]


@pytest.mark.parametrize(
    "parts",
    [[b"x", b"1.0"], [b"", b"2.0", b"1", b"d", b"a", b"", b"NULL"], [b"", b"1.0", b"1"]],
    ids=["no-delimiter", "wrong-version", "too-short"],
)
def test_a_malformed_zap_request_is_refused(parts: list[bytes]) -> None:
    with pytest.raises(zap.ZapError):
        zap.parse_request(parts)


def test_daemon_ids_never_look_like_libzmq_ids() -> None:
    """libzmq's own ids are a zero byte and a 32-bit counter: the daemon's cannot collide with them."""
    ids = {zap.new_identity() for _ in range(5000)}
    assert len(ids) == 5000
    assert all(len(i) == zap.IDENTITY_BYTES and i[0] != 0 for i in ids)


def test_ipc_addresses_give_the_peer_pid_and_uid() -> None:
    assert address_pid("localhost:1000:100:4242") == 4242 and address_uid("localhost:1000:100:4242") == 1000
    assert address_pid("10.0.0.3") is None and address_uid("10.0.0.3") is None


def test_a_connection_is_known_by_descriptor_then_by_routing_id_and_reported_when_it_ends() -> None:
    table = PeerTable()
    assert table.accepted_fd(7) is None
    table.admitted(b"id-A", Admission("localhost:0:0:99", "NULL"), now=0.0)
    conn = table.seen(b"id-A", 7)
    assert conn is not None and conn.assigned and conn.label == f"#{conn.number} pid 99"
    assert b"id-A" in table and table.open == 1
    ended = table.disconnected(7)
    assert ended is conn and b"id-A" not in table and table.open == 0
    assert table.disconnected(7) is None, "reported once"


def test_a_descriptor_used_again_is_a_new_connection() -> None:
    table = PeerTable()
    table.accepted_fd(5)
    table.admitted(b"old", Admission("1.2.3.4", "NULL"), 0.0)
    old = table.seen(b"old", 5)
    # The monitor's end of the old connection was missed: the accept of the next one replaces it.
    assert table.accepted_fd(5) is old and b"old" not in table
    table.admitted(b"new", Admission("1.2.3.4", "NULL"), 0.0)
    new = table.seen(b"new", 5)
    assert new is not None and new is not old and new.number > old.number  # type: ignore[union-attr]
    assert table.disconnected(5) is new


def test_late_messages_of_an_ended_connection_are_not_taken_for_a_new_one() -> None:
    table = PeerTable()
    table.accepted_fd(3)
    table.admitted(b"gone", Admission("", "NULL"), 0.0)
    table.seen(b"gone", 3)
    table.disconnected(3)
    table.accepted_fd(3)  # the descriptor is reused at once
    assert table.seen(b"gone", 3) is None
    table.admitted(b"fresh", Admission("", "NULL"), 0.0)
    fresh = table.seen(b"fresh", 3)
    assert fresh is not None and fresh.identity == b"fresh"


def test_a_peer_that_kept_its_own_id_is_served_but_marked() -> None:
    table = PeerTable()
    table.accepted_fd(9)
    conn = table.seen(b"\x00\x6b\x8b\x45\x67", 9)
    assert conn is not None and not conn.assigned and conn.label == f"#{conn.number}"


def test_admissions_never_followed_by_a_message_are_forgotten_and_ended_ids_are_bounded() -> None:
    table = PeerTable()
    for i in range(100):
        table.admitted(f"a{i}".encode(), Admission("", "NULL"), now=float(i))
    assert table.expire(now=100.0) == 41  # admitted at 0..40 s: 60 s or older
    small = PeerTable(max_admitted=10)
    for i in range(25):
        small.admitted(f"x{i}".encode(), Admission("", "NULL"), now=0.0)
    assert len(small._admitted) == 10 and b"x24" in small._admitted and b"x0" not in small._admitted
    for fd in range(ENDED_KEPT + 10):
        identity = f"c{fd}".encode()
        table.accepted_fd(fd)
        table.admitted(identity, Admission("", "NULL"), 0.0)
        table.seen(identity, fd)
        table.disconnected(fd)
    assert len(table._ended) == ENDED_KEPT and len(table) == 0


def test_a_peer_that_kept_its_own_id_still_gets_the_rights_zap_gave_its_user() -> None:
    """On a loaded machine a peer's handshake can be read after the daemon's ZAP reply, and keep its own id:
    it must still get its admission (an adapter with none could never register)."""
    table = PeerTable()
    table.accepted_fd(5)
    table.accepted_fd(6)
    table.admitted(b"daemon-id-1", Admission("", "CURVE", user="alice", rights=frozenset({"operator"})), 0.0)
    table.admitted(b"daemon-id-2", Admission("", "NULL", rights=frozenset({"*"})), 0.0)
    own = table.seen(b"its-own-id", 6, "")
    assert own is not None and not own.assigned and own.rights == frozenset({"*"})
    alice = table.seen(b"alices-own-id", 5, "alice")
    assert alice is not None and alice.rights == frozenset({"operator"}) and alice.user == "alice"
    stranger = table.seen(b"nobody", None, "mallory")
    assert stranger is not None and stranger.rights == frozenset()
