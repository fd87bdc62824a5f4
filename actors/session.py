"""`SessionActor`: the pykka shell around one `SessionCore`.

The actor owns its core (state machine, pending requests) and does three
things only: feed it messages with the time, turn its outputs into frames for
the hub, and report when the session is finished. It never touches a socket.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import pykka

from actors.session_core import (
    Dropped,
    Finished,
    Opened,
    OpenFailed,
    Output,
    Refuse,
    SessionClosed,
    SessionCore,
    StopServer,
    ToClient,
    ToServer,
)
from transport.frames import ErrorCode, encode

log = logging.getLogger("troupe.session")


class Outbox(Protocol):
    """The part of the hub a session uses: queue frames, run code on the loop."""

    def send_front(self, peer: bytes, data: bytes) -> None: ...

    def send_back(self, peer: bytes, data: bytes) -> None: ...

    def call(self, fn: Callable[[], object]) -> None: ...


# -- messages ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FromClient:
    msg: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FromServer:
    msg: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ServerStarted:
    pid: int


@dataclass(frozen=True, slots=True)
class ServerExited:
    code: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class CloseSession:
    reason: str
    ref: int | str | None = None


@dataclass(frozen=True, slots=True)
class Describe:
    """Ask for a snapshot of the session (use with ``ask``)."""


@dataclass(frozen=True, slots=True)
class Peers:
    client: bytes
    adapter: bytes
    open_ref: int | str


class SessionActor(pykka.ThreadingActor):
    def __init__(
        self,
        core: SessionCore,
        peers: Peers,
        outbox: Outbox,
        on_finished: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.core = core
        self._peers = peers
        self._outbox = outbox
        self._on_finished = on_finished
        self._clock = clock
        self._seq = 0
        self._close_ref: int | str | None = None
        self._reported = False

    def on_receive(self, message: Any) -> Any:
        core, now = self.core, self._clock()
        match message:
            case FromClient(msg):
                self._emit(core.receive_from_client(msg, now))
            case FromServer(msg):
                self._emit(core.receive_from_server(msg, now))
            case ServerStarted(pid):
                self._emit(core.server_started(pid, now))
            case ServerExited(code, reason):
                self._emit(core.server_exited(code, reason, now))
            case CloseSession(reason, ref):
                self._close_ref = ref
                self._emit(core.close(reason, now))
            case Describe():
                return describe(core, now)
            case _:
                raise TypeError(f"SessionActor got an unknown message {message!r}")
        return None

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        log.error("session %s crashed: %r", self.core.sid, exception_value)
        self._emit(self.core.fail(f"internal error: {exception_value!r}", self._clock()), stop=False)
        self._report_finished()

    def on_stop(self) -> None:
        if not self.core.state.terminal:
            self._emit(self.core.fail("the daemon stopped the session", self._clock()), stop=False)
        self._report_finished()

    def _report_finished(self) -> None:
        if not self._reported:
            self._reported = True
            sid, finished = self.core.sid, self._on_finished
            self._outbox.call(lambda: finished(sid))

    def _emit(self, outputs: list[Output], *, stop: bool = True) -> None:
        sid, peers, outbox = self.core.sid, self._peers, self._outbox
        for out in outputs:
            match out:
                case ToClient(msg):
                    self._seq += 1
                    outbox.send_front(peers.client, encode("mcp", sid=sid, seq=self._seq, msg=msg))
                case ToServer(msg):
                    outbox.send_back(peers.adapter, encode("mcp", sid=sid, msg=msg))
                case Refuse(code, message, request_id):
                    outbox.send_front(
                        peers.client, encode("error", code=str(code), message=message, sid=sid, id=request_id)
                    )
                case Opened():
                    outbox.send_front(
                        peers.client, encode("opened", ref=peers.open_ref, sid=sid, server=self.core.server)
                    )
                    log.info("session %s opened on server %s (pid %s)", sid, self.core.server, out.pid)
                case OpenFailed(message):
                    outbox.send_front(
                        peers.client,
                        encode("error", code=str(ErrorCode.SPAWN_FAILED), message=message, ref=peers.open_ref),
                    )
                    log.warning("session %s: %s", sid, message)
                case SessionClosed(reason, message):
                    outbox.send_front(
                        peers.client, encode("closed", sid=sid, reason=reason, message=message, ref=self._close_ref)
                    )
                    log.info("session %s closed: %s", sid, message)
                case StopServer(reason):
                    outbox.send_back(peers.adapter, encode("close", sid=sid, reason=reason))
                case Finished():
                    if stop:
                        self.stop()
                case Dropped(source, reason):
                    log.debug("session %s dropped a message from the %s: %s", sid, source, reason)


def describe(core: SessionCore, now: float) -> dict[str, Any]:
    """A JSON-friendly snapshot of a session."""
    info = core.info
    return {
        "sid": core.sid,
        "server": core.server,
        "state": core.state.value,
        "failure": core.machine.failure,
        "era": info.era.value,
        "protocol_version": info.protocol_version,
        "client_info": info.client_info,
        "server_info": info.server_info,
        "pid": info.pid,
        "age_s": round(now - core.created_at, 3),
        "idle_s": round(now - core.last_activity, 3),
        "dropped": core.dropped,
        "pending": [
            {"direction": direction, "id": p.id, "method": p.method, "age_s": round(now - p.sent_at, 3)}
            for direction, table in (("client_to_server", core.from_client), ("server_to_client", core.from_server))
            for p in table
        ],
    }
