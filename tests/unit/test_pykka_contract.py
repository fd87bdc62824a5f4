"""`LoopActor` relies on a few private names of pykka: this fails loudly when a pykka upgrade changes them.

On failure, read pykka's changelog and `pykka.Actor`'s source, adapt
`mcp_troupe.actors.shells.loop_actor`, then update what is pinned here.
"""

from __future__ import annotations

import hashlib
import inspect

import pykka
from pykka import ThreadingFuture, messages

from mcp_troupe.actors.shells.loop_actor import PYKKA_PRIVATE

ACTOR_LOOP_RUNNING_SHA256 = "4109f316d2be434e"
"""`pykka.Actor._actor_loop_running` in pykka 4.5: `LoopActor._handle_envelope` is one turn of it."""


def test_every_private_name_is_there_with_the_signature_relied_on() -> None:
    found = {name: str(inspect.signature(getattr(pykka.Actor, name))) for name in PYKKA_PRIVATE}
    assert found == PYKKA_PRIVATE


def test_the_message_loop_copied_is_the_one_pykka_runs() -> None:
    source = inspect.getsource(pykka.Actor._actor_loop_running)
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == ACTOR_LOOP_RUNNING_SHA256, source


def test_the_other_private_names_used() -> None:
    assert hasattr(ThreadingFuture(), "_result")
    assert messages._ActorStop.__module__ == "pykka.messages"


def test_no_other_module_touches_pykka_privately() -> None:
    from conftest import ROOT

    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("actors", "transport")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.name != "loop_actor.py" and ("messages._" in path.read_text() or "pykka._" in path.read_text())
    ]
    assert offenders == []
