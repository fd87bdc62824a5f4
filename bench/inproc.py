"""In-process measurements, each run in a fresh process (``python -m bench.inproc WHAT``):

``janitor``
    Measurement 5, the cost of one janitor pass as the hub's thread runs it
    (`mcp_troupe.actors.core.deadlines.Wakeups.pop_due` plus one ``tell(Wake())`` to each due
    session's `LoopActor`, on the loop thread) with N sessions waiting and 1 %
    of them due, at N = 1,000, 10,000 and 100,000; the same with a fixed 10
    sessions due; the cost per due session; and the work each woken session
    then does (`SessionCore.wake` with one request past its deadline: the
    timeout error and the cancellation).
``supervisor``
    Measurement 6, from a janitor crash (`InjectFault` told to the
    `mcp_troupe.actors.shells.supervisor.Supervisor`) until the new janitor incarnation answers
    a message sent through the supervisor (`Forward`): a `Tick`, answered when
    the janitor runs its pass (here a probe that records the time).
    Baseline: starting a fresh janitor actor and getting the same answer.
``actor-floor N``
    The resident memory and the start rate of N bare pykka actors, the floor
    under a session actor (baseline of measurement 4).

Each prints one JSON object on stdout.
"""

from __future__ import annotations

import gc
import json
import random
import sys
import threading
import time
from collections import deque
from typing import Any

import pykka

from bench.common import ratio, rss_bytes, summary


class _Nobody:
    """A supervisor stand-in for a janitor that is not supervised."""

    def tell(self, message: object) -> None:
        pass


class _Probe:
    """Stands in for the hub: records when the janitor runs a pass."""

    def __init__(self) -> None:
        self.woken = threading.Event()
        self.at = 0

    def run_pass(self, now: float) -> None:
        self.at = time.perf_counter_ns()
        self.woken.set()


class _Idle(pykka.ThreadingActor):
    use_daemon_thread = True

    def on_receive(self, message: Any) -> Any:
        return None


class _Loop:
    """The hub's loop as code on its own thread sees it: ``call`` queues in its run queue."""

    def __init__(self) -> None:
        self.soon: deque[Any] = deque()

    def call(self, fn: Any) -> None:
        self.soon.append(fn)

    def on_loop_thread(self) -> bool:
        return True


def _session_refs(count: int) -> tuple[list[Any], _Loop]:
    """Refs of real, started-on-the-loop `LoopActor`s (what sessions are): a ``tell`` on the loop thread costs
    exactly what the pass pays in the daemon, an append to the actor's inbox and its scheduling."""
    from mcp_troupe.actors.shells.loop_actor import LoopActor

    class Session(LoopActor):
        def on_receive(self, message: Any) -> Any:
            return None

    loop = _Loop()
    refs = [Session.start(loop) for _ in range(count)]  # type: ignore[arg-type]
    while loop.soon:  # run their start-up: they are ready for messages
        loop.soon.popleft()()
    return refs, loop


def _janitor_pass(sessions: int, due: int, reps: int, refs: list[Any], loop: _Loop) -> list[int]:
    """Nanoseconds of one pass (``pop_due`` + ``tell(Wake())`` per due session) with ``sessions`` waiting."""
    from mcp_troupe.actors.core.deadlines import Wakeups
    from mcp_troupe.actors.shells.session import Wake

    now = 1000.0
    rng = random.Random(sessions * 31 + due)
    wake = Wake()
    samples = []
    for _ in range(reps):
        wakeups: Wakeups[int] = Wakeups()
        due_set = set(rng.sample(range(sessions), due))
        for i in range(sessions):
            wakeups.set(i, now - rng.random() * 30 if i in due_set else now + 0.001 + rng.random() * 300)
        ref_of = dict(zip(sorted(due_set), refs, strict=False))  # a distinct actor for each due session
        gc.collect()
        began = time.perf_counter_ns()
        woken = wakeups.pop_due(now)
        for i in woken:
            ref_of[i].tell(wake)
        samples.append(time.perf_counter_ns() - began)
        if len(woken) != due:
            raise RuntimeError(f"the pass woke {len(woken)} sessions, expected {due}")
        while loop.soon:  # the woken sessions' own turns, which are not the pass's work
            loop.soon.popleft()()
    return samples


def _session_wake(count: int) -> list[int]:
    """Nanoseconds of `SessionCore.wake` for a session with one request past its deadline."""
    from mcp_troupe.actors.core.options import Limits
    from mcp_troupe.actors.core.session import SessionCore

    limits = Limits(rate_per_session=0, request_timeout=30.0)  # no request timeout by default (transparency)
    cores = []
    for i in range(count):
        core = SessionCore(f"s{i}", "echo", 0.0, limits)
        core.server_started(1, 0.0)
        core.receive_from_client(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "b", "version": "1"},
                },
            },
            0.0,
        )
        core.receive_from_server(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "result": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "serverInfo": {"name": "e", "version": "1"},
                },
            },
            0.0,
        )
        core.receive_from_client({"jsonrpc": "2.0", "method": "notifications/initialized"}, 0.0)
        core.receive_from_client(
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}, 0.0
        )
        cores.append(core)
    samples = []
    late = limits.request_timeout + 1
    for core in cores:
        began = time.perf_counter_ns()
        outputs = core.wake(late)
        samples.append(time.perf_counter_ns() - began)
        if not outputs:
            raise RuntimeError("the woken session expired nothing")
    return samples


def janitor(quick: bool) -> dict[str, Any]:
    reps = 5 if quick else 100
    sizes = (1_000, 10_000, 100_000)
    refs, loop = _session_refs(max(sizes) // 100)
    us = 1e-3
    result: dict[str, Any] = {
        "what": "one janitor pass as the hub runs it (Wakeups.pop_due + tell(Wake) per due session, on the loop "
        "thread), in-process, microseconds; sessions are real LoopActor refs",
        "repetitions": reps,
    }
    passes = {}
    for n in sizes:
        one_pct = summary(_janitor_pass(n, n // 100, reps, refs, loop), us, 2)
        fixed = summary(_janitor_pass(n, 10, reps, refs, loop), us, 2)
        passes[str(n)] = {
            "due_1pct": n // 100,
            "pass_1pct_us": one_pct,
            "pass_10_due_us": fixed,
            "per_due_session_us": round(one_pct["p50"] / (n // 100), 3),
        }
    wake = summary(_session_wake(200 if quick else 2_000), us, 2)
    for n in sizes:
        passes[str(n)]["with_sessions_work_us"] = round(
            passes[str(n)]["pass_1pct_us"]["p50"] + (n // 100) * wake["p50"], 1
        )
    small, large, huge = passes["1000"], passes["10000"], passes["100000"]
    result.update(
        {
            "sizes": passes,
            "session_wake_us": wake,
            "ratio_10k_1k_pass_1pct_p50": ratio(large["pass_1pct_us"]["p50"], small["pass_1pct_us"]["p50"]),
            "ratio_10k_1k_pass_10_due_p50": ratio(large["pass_10_due_us"]["p50"], small["pass_10_due_us"]["p50"]),
            "ratio_10k_1k_per_due_session": ratio(large["per_due_session_us"], small["per_due_session_us"]),
            "ratio_100k_1k_per_due_session": ratio(huge["per_due_session_us"], small["per_due_session_us"]),
            "ratio_10k_1k_with_sessions_work": ratio(large["with_sessions_work_us"], small["with_sessions_work_us"]),
        }
    )
    return result


# -- measurement 6 -------------------------------------------------------------------


def supervisor(quick: bool) -> dict[str, Any]:
    from mcp_troupe.actors.core.supervision import ChildSpec, SupervisorPolicy
    from mcp_troupe.actors.shells.janitor import Janitor
    from mcp_troupe.actors.shells.supervisor import TICK, ChildContext, Forward, InjectFault, Supervisor

    crashes = 10 if quick else 100
    started = threading.Event()
    incarnations: list[int] = []
    probe = _Probe()

    def start_janitor(context: ChildContext) -> pykka.ActorRef[Any]:
        ref = Janitor.start(context, probe.run_pass)
        incarnations.append(context.incarnation)
        started.set()
        return ref

    policy = SupervisorPolicy(intensity=10 * crashes, period=1.0)
    sup = Supervisor.start([(ChildSpec("janitor"), start_janitor)], policy)
    try:
        started.wait(10)

        def answered_through_supervisor() -> int:
            probe.woken.clear()
            sup.tell(Forward("janitor", TICK))
            if not probe.woken.wait(10):
                raise RuntimeError("the janitor did not answer")
            return probe.at

        answered_through_supervisor()  # warm
        restarts, serving = [], []
        for _ in range(crashes):
            started.clear()
            began = time.perf_counter_ns()
            sup.tell(InjectFault("janitor", now=True))
            if not started.wait(10):
                raise RuntimeError("the janitor was not restarted")
            restarts.append(time.perf_counter_ns() - began)
            serving.append(answered_through_supervisor() - began)
            time.sleep(0.005)  # let the crashed incarnation's thread finish
        if incarnations[-1] != crashes + 1:
            raise RuntimeError(f"expected incarnation {crashes + 1}, got {incarnations[-1]}")
        baseline = []
        for i in range(crashes):
            began = time.perf_counter_ns()
            ref = Janitor.start(ChildContext(_Nobody(), f"fresh-{i}", 1), probe.run_pass)  # type: ignore[arg-type]
            probe.woken.clear()
            ref.tell(TICK)
            if not probe.woken.wait(10):
                raise RuntimeError("the fresh janitor did not answer")
            baseline.append(probe.at - began)
            ref.stop()
    finally:
        sup.stop()
        pykka.ActorRegistry.stop_all()
    ms = 1e-6
    serve = summary(serving, ms, 3)
    base = summary(baseline, ms, 3)
    return {
        "what": "janitor crash (InjectFault via the Supervisor) until the new incarnation answers a Tick sent "
        "through the supervisor (Forward) by running its pass; baseline: start a fresh janitor actor and get "
        "the same answer; ms",
        "crashes": crashes,
        "crash_to_serving_ms": serve,
        "crash_to_restarted_ms": summary(restarts, ms, 3),
        "fresh_actor_ms": base,
        "ratio_p50": ratio(serve["p50"], base["p50"]),
        "ratio_p99": ratio(serve["p99"], base["p99"]),
    }


# -- baseline of measurement 4 -------------------------------------------------------


def actor_floor(count: int) -> dict[str, Any]:
    gc.collect()
    time.sleep(0.2)
    before = rss_bytes_self()
    began = time.perf_counter()
    refs = [_Idle.start() for _ in range(count)]
    elapsed = time.perf_counter() - began
    refs[-1].ask(None)
    time.sleep(0.5)
    after = rss_bytes_self()
    pykka.ActorRegistry.stop_all()
    return {
        "what": f"{count} bare pykka ThreadingActors in a fresh process",
        "actors": count,
        "bytes_per_actor": round((after - before) / count),
        "starts_per_s": round(count / elapsed),
    }


def rss_bytes_self() -> int:
    import os

    return rss_bytes(os.getpid())


if __name__ == "__main__":
    what = sys.argv[1]
    quick = "--quick" in sys.argv
    if what == "janitor":
        out = janitor(quick)
    elif what == "supervisor":
        out = supervisor(quick)
    elif what == "actor-floor":
        out = actor_floor(int(sys.argv[2]))
    else:
        raise SystemExit(f"unknown measurement {what!r}")
    json.dump(out, sys.stdout)
    print()
