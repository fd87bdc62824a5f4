"""Measurement 3, throughput: requests/s through the daemon by number of concurrent sessions.

For each level (1, 16, 64, 256 sessions) ``min(4, sessions)`` client processes
(`bench.loadgen`, one DEALER each) share the sessions and keep one request in
flight per session. The same processes and the same number of requests in
flight are then run against a plain ROUTER echo process, which does the same
per-message work as the echo adapter: the raw ZMQ request/reply capacity of
this machine, measured the same way, in the same run. The two are run in
alternation, several times; each figure is the median over repetitions.

The daemon serves the native echo adapter and runs with ``--rate-per-session
0``: the default per-session rate limit (100 requests/s, bursts of 200) would
otherwise be what is measured.

At 64 sessions, once the maximum is known, the latency under load: an open loop
(`bench.loadgen`'s ``pace``) at 50 % and 90 % of the daemon's maximum, through the
daemon and, at the same rates, against the raw echo; p50 and p99 counted from
when each request was due, so the queueing a loaded proxy adds is in them.

With ``profile`` set, one more run at 64 sessions is recorded with py-spy
(sampling the daemon's process) and summarised.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT, bench_env, percentile, ratio, read_json_line, start_echo_daemon, stop_process

LEVELS = (1, 16, 64, 256)
UNDER_LOAD_AT = 64
"""Sessions of the latency-under-load figure."""
UNDER_LOAD_SHARES = (0.5, 0.9)
"""Its arrival rates, as shares of the maximum the daemon reached at `UNDER_LOAD_AT` sessions."""
PROCESSES = 4
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU time of a process (all its threads), or of one of its threads."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


class Group:
    """The loadgen processes of one level and mode."""

    def __init__(self, endpoint: str, sessions: int, plain: bool, log: Path) -> None:
        count = min(PROCESSES, sessions)
        shares = [sessions // count + (1 if i < sessions % count else 0) for i in range(count)]
        self._log = log.open("ab")
        self.processes = [
            subprocess.Popen(
                [PYTHON, "-m", "bench.loadgen", "--endpoint", endpoint, "--sessions", str(share)]
                + (["--plain"] if plain else []),
                cwd=ROOT,
                env=bench_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log,
                text=True,
            )
            for share in shares
        ]
        for p in self.processes:
            read_json_line(p.stdout, "loadgen start-up")

    def go(self, warmup: float, seconds: float) -> dict[str, Any]:
        for p in self.processes:
            p.stdin.write(f"go {warmup} {seconds}\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        results = [read_json_line(p.stdout, "loadgen") for p in self.processes]
        count = sum(r["count"] for r in results)
        latencies = [x for r in results for x in r["latency_us"]]
        return {"rps": count / seconds, "latencies_us": latencies}

    def pace(self, warmup: float, seconds: float, rate: float) -> dict[str, Any]:
        """An open loop at ``rate`` requests/s in all (shared evenly by the processes)."""
        for p in self.processes:
            p.stdin.write(f"pace {warmup} {seconds} {rate / len(self.processes)}\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        results = [read_json_line(p.stdout, "loadgen") for p in self.processes]
        latencies = [x for r in results for x in r["latency_us"]]
        return {"rps": sum(r["count"] for r in results) / seconds, "latencies_us": latencies}

    def close(self) -> None:
        for p in self.processes:
            try:
                p.stdin.write("quit\n")  # type: ignore[union-attr]
                p.stdin.flush()  # type: ignore[union-attr]
            except OSError:
                pass
        for p in self.processes:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                stop_process(p)
        self._log.close()


def run(quick: bool, profile: bool = False, results_dir: Path | None = None) -> dict[str, Any]:
    reps, warmup, seconds = (1, 0.1, 0.3) if quick else (4, 0.5, 3.0)
    tmp = Path(tempfile.mkdtemp(prefix="trb-tp-", dir="/tmp"))
    plain_endpoint = f"ipc://{tmp / 'plain.sock'}"
    plain = subprocess.Popen(
        [PYTHON, "-m", "bench.echo_adapter", "--bind", plain_endpoint],
        cwd=ROOT,
        env=bench_env(),
        stdout=subprocess.PIPE,
    )
    daemon = start_echo_daemon()
    levels: dict[str, Any] = {}
    under_load: dict[str, Any] = {}
    profile_result: dict[str, Any] | None = None
    try:
        assert plain.stdout is not None
        if plain.stdout.readline().strip() != b"ready":
            raise RuntimeError("the plain echo server did not start")
        log = daemon.runtime_dir / "loadgen.log"
        for sessions in LEVELS:
            groups = {
                "daemon": Group(daemon.front, sessions, False, log),
                "raw": Group(plain_endpoint, sessions, True, log),
            }
            runs: dict[str, list[dict[str, Any]]] = {"daemon": [], "raw": []}
            try:
                for rep in range(reps):
                    for mode in ("raw", "daemon") if rep % 2 == 0 else ("daemon", "raw"):
                        cpu = (cpu_seconds(daemon.pid), cpu_seconds(daemon.adapter.pid))  # type: ignore[union-attr]
                        run_ = groups[mode].go(warmup, seconds)
                        if mode == "daemon":
                            # CPU over warm-up + window, per request counted in the window: a slight overestimate
                            spent = (cpu_seconds(daemon.pid) - cpu[0], cpu_seconds(daemon.adapter.pid) - cpu[1])  # type: ignore[union-attr]
                            requests = max(1.0, run_["rps"] * (warmup + seconds))
                            run_["daemon_cpu_us"] = spent[0] / requests * 1e6
                            run_["adapter_cpu_us"] = spent[1] / requests * 1e6
                            run_["daemon_cores"] = spent[0] / (warmup + seconds)
                        runs[mode].append(run_)
                if sessions == UNDER_LOAD_AT:
                    under_load = _under_load(
                        groups, statistics.median(r["rps"] for r in runs["daemon"]), warmup, seconds
                    )
                if profile and sessions == 64:
                    profile_result = _profile(daemon.pid, groups["daemon"], results_dir or tmp)
            finally:
                for group in groups.values():
                    group.close()
            level: dict[str, Any] = {"client_processes": min(PROCESSES, sessions), "in_flight": sessions}
            for mode, rs in runs.items():
                rates = [r["rps"] for r in rs]
                lat = [x for r in rs for x in r["latencies_us"]]
                level[f"{mode}_rps"] = round(statistics.median(rates))
                level[f"{mode}_rps_runs"] = [round(x) for x in rates]
                level[f"{mode}_latency_us"] = (
                    {
                        "p50": round(percentile(lat, 50), 1),
                        "p99": round(percentile(lat, 99), 1),
                    }
                    if lat
                    else None
                )
            level["ratio"] = ratio(level["daemon_rps"], level["raw_rps"])
            for key in ("daemon_cpu_us", "adapter_cpu_us", "daemon_cores"):
                level[f"{key.replace('_us', '')}_per_request_us" if key.endswith("_us") else key] = round(
                    statistics.median(r[key] for r in runs["daemon"]), 2 if key == "daemon_cores" else 0
                )
            levels[str(sessions)] = level
    finally:
        daemon.stop()
        plain.terminate()
        plain.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    result: dict[str, Any] = {
        "under_load": under_load,
        "what": "requests/s (tools/call through the daemon to the echo adapter; one request in flight per "
        "session) vs the same client processes and in-flight count against a plain ROUTER echo",
        "repetitions": reps,
        "seconds_per_run": seconds,
        "levels": levels,
    }
    if profile_result is not None:
        result["profile"] = profile_result
    return result


def _under_load(groups: dict[str, Group], max_rps: float, warmup: float, seconds: float) -> dict[str, Any]:
    """Round trips at 50 % and 90 % of the daemon's measured maximum, as an open loop (a fixed arrival
    rate, the way a loaded proxy's users feel it), through the daemon and, at the same rate, the raw echo."""
    result: dict[str, Any] = {"max_rps": round(max_rps)}
    for share in UNDER_LOAD_SHARES:
        rate = share * max_rps
        entry: dict[str, Any] = {"rate": round(rate)}
        for mode in ("raw", "daemon"):
            run_ = groups[mode].pace(warmup, seconds, rate)
            lat = run_["latencies_us"]
            entry[mode] = {
                "rps": round(run_["rps"]),
                "p50_us": round(percentile(lat, 50), 1) if lat else None,
                "p99_us": round(percentile(lat, 99), 1) if lat else None,
            }
        result[f"{round(share * 100)}pct"] = entry
    return result


def _profile(pid: int, group: Group, out_dir: Path, seconds: int = 8) -> dict[str, Any]:
    """Record the daemon with py-spy while ``group`` keeps 64 sessions busy.

    Two recordings: ``--gil`` (only the thread holding the GIL is sampled: where
    the interpreter's time goes) and all non-idle threads; plus a flame graph
    of the first kind. py-spy pauses the process for each sample (its default,
    for exact stacks), so the request rate while profiling is lower.
    """
    py_spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    if not Path(py_spy).exists():
        return {"error": "py-spy is not installed (pip install py-spy)"}
    out_dir.mkdir(parents=True, exist_ok=True)
    gil = out_dir / "profile-64-sessions-gil.txt"
    threads = out_dir / "profile-64-sessions-threads.txt"
    svg = out_dir / "profile-64-sessions-gil.svg"
    thread_cpu = _cpu_by_thread(py_spy, pid, group, seconds)
    rates = []
    for out, extra in ((gil, ["--gil", "--format", "raw"]), (threads, ["--format", "raw"]), (svg, ["--gil"])):
        recorder = subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "100", *extra, "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        rates.append(round(group.go(0.0, seconds)["rps"]))
        recorder.wait(60)
    return {
        "cpu_cores_by_thread": thread_cpu,
        "rps_while_profiling": rates,
        "gil_holder": summarise_collapsed(gil),
        "non_idle_threads": summarise_collapsed(threads),
        "files": [str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in (gil, threads, svg)],
    }


def _cpu_by_thread(py_spy: str, pid: int, group: Group, seconds: float) -> dict[str, Any]:
    """CPU cores used by the hub thread, the session actors' threads and the rest, under load (no sampler)."""
    dump = subprocess.run(
        [py_spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60, check=False
    ).stdout
    names = {
        int(tid): name for tid, name in re.findall(r'Thread (?:0x[0-9a-fA-F]+ )?\(?(\d+)\)? \([^)]*\): "([^"]+)"', dump)
    }

    def kind(tid: int) -> str:
        name = names.get(tid, "")
        if name == "troupe-hub":
            return "hub"
        if name.startswith("SessionActor"):
            return "session_actors"
        return "other"

    def sample() -> dict[int, float]:
        out = {}
        for entry in Path(f"/proc/{pid}/task").iterdir():
            try:
                out[int(entry.name)] = cpu_seconds(pid, int(entry.name))
            except OSError:
                pass
        return out

    before = sample()
    began = time.perf_counter()
    load = group.go(0.0, seconds)
    after = sample()
    wall = time.perf_counter() - began
    cores: Counter[str] = Counter()
    for tid, value in after.items():
        cores[kind(tid)] += value - before.get(tid, 0.0)
    result: dict[str, Any] = {k: round(v / wall, 2) for k, v in cores.items()}
    result["rps"] = round(load["rps"])
    result["cpu_us_per_request"] = {k: round(v / (load["rps"] * seconds) * 1e6) for k, v in cores.items()}
    return result


def summarise_collapsed(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed-stack output."""
    if not path.exists():
        return {"error": f"{path} was not written"}
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        total += count
        frames = stack.split(";")
        threads[frames[0].split(" ")[0] if frames else "?"] += count
        funcs = list(frames[1:]) if frames and frames[0].startswith(("thread", "process")) else frames
        if not funcs:
            continue
        self_counts[funcs[-1]] += count
        for f in set(funcs):
            inclusive[f] += count
    share = lambda c: round(100 * c / total, 1) if total else 0.0  # noqa: E731
    return {
        "samples": total,
        "self_pct": [[f, share(c)] for f, c in self_counts.most_common(top)],
        "inclusive_pct": [[f, share(c)] for f, c in inclusive.most_common(top)],
    }


if __name__ == "__main__":
    import sys

    json.dump(run("--quick" in sys.argv, "--profile" in sys.argv, ROOT / "bench" / "results"), sys.stdout, indent=1)
