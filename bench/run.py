"""troupe's benchmark harness: ``python -m bench`` (or ``python bench/run.py``).

    python -m bench [--quick] [--json PATH] [--only NAME,...] [--profile] [--setup]

Seven measurements (see ``docs/performance.rst``), each reported against a
baseline measured in the same run on the same machine: hop cost, real
server, throughput, scale, janitor pass, supervisor restart, start-up. The
figures are printed as a table and written as JSON (default
``bench/results/latest.json``) with a description of the machine and the load
average at start and end.

``--quick`` is a smoke run (well under a minute) that checks that every
measurement works; its figures are too short to mean much. The default full
run takes a few minutes. The exit status is 0 when every measurement ran
(targets met or missed alike) and 1 when one failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python bench/run.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import hop, http_load, passivation, proxy_env, real_server, scale, startup, throughput
from bench.common import BENCH, PYTHON, ROOT, SOURCE, bench_env, loadavg, machine, ratio

if SOURCE != ROOT:
    sys.path.insert(0, str(SOURCE))

MEASUREMENTS = (
    "startup",
    "hop",
    "real_server",
    "throughput",
    "http",
    "scale",
    "janitor",
    "supervisor",
    "passivation",
)
COMPARED_PATHS: tuple[tuple[str, str, str], ...] = (
    ("direct", "troupe_connect", "2 add {q} (ms): direct stdio | troupe_connect"),
    ("direct", "client_library", "2 add {q} (ms): direct stdio | client_library"),
    ("direct", "troupe_http", "2 add {q} (ms): direct stdio | troupe_http"),
    ("direct_http", "troupe_connect_remote", "2 add {q} (ms): direct HTTP | troupe connect to it by url"),
    ("direct_sdk1", "mcp_proxy", "2 add {q} (ms): direct stdio, SDK 1.x | mcp-proxy"),
    ("mcp_proxy", "troupe_http_sdk1", "2 add {q} (ms), SDK 1.x over HTTP: mcp-proxy | troupe's HTTP front"),
)
"""The real-server paths the table sets side by side: (baseline, path, row label)."""
QUICK_ORDER = ("startup", "hop", "throughput", "http", "scale", "janitor", "supervisor", "passivation", "real_server")
"""The quick run measures the real server last: mcp-proxy's environment may still be being made."""


def _inproc(what: str, quick: bool) -> dict[str, Any]:
    args = [PYTHON, "-m", "bench.inproc", what] + (["--quick"] if quick else [])
    done = subprocess.run(args, cwd=ROOT, env=bench_env(), capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench.inproc {what} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _git() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=SOURCE, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--", "actors", "transport")),
        }
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


# -- targets -----------------------------------------------------------------------


def _get(results: dict[str, Any], *keys: str) -> Any:
    value: Any = results
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue: the figure, the bound and whether it is met (None: not measured)."""

    def row(name: str, value: Any, bound: str, met: Callable[[Any], bool], unit: str = "") -> dict[str, Any]:
        return {
            "target": name,
            "bound": bound,
            "value": value,
            "unit": unit,
            "met": None if value is None else bool(met(value)),
        }

    tp64 = _get(r, "throughput", "levels", "64")
    tp256 = _get(r, "throughput", "levels", "256")
    large = _get(r, "scale", "sizes", "10000")
    fall = ratio(tp256["daemon_rps"], tp64["daemon_rps"]) if tp64 and tp256 else None
    return [
        row("hop ratio p50", _get(r, "hop", "ratio_p50"), "<= 2.5", lambda v: v <= 2.5, "x"),
        row("hop ratio p99", _get(r, "hop", "ratio_p99"), "<= 3", lambda v: v <= 3, "x"),
        row(
            "throughput at 64 sessions", tp64 and tp64["daemon_rps"], ">= 20,000 req/s", lambda v: v >= 20_000, "req/s"
        ),
        row("throughput at 64 sessions / raw ZMQ capacity", tp64 and tp64["ratio"], ">= 0.5", lambda v: v >= 0.5, "x"),
        row("throughput at 256 / at 64 sessions", fall, ">= 0.9", lambda v: v >= 0.9, "x"),
        row(
            "real server: troupe connect p50 / direct stdio (example add)",
            _get(r, "real_server", "troupe_connect_overhead_p50_pct"),
            "<= 25 % (1.25 x)",
            lambda v: v <= 25,
            "%",
        ),
        row(
            "real server: client library p50 / direct stdio (example add)",
            _get(r, "real_server", "client_library_ratio_p50"),
            "<= 1.10",
            lambda v: v <= 1.10,
            "x",
        ),
        row(
            "real server: troupe's added p50 / mcp-proxy's added p50",
            _get(r, "real_server", "troupe_vs_mcp_proxy_added_p50"),
            "<= 0.33",
            lambda v: v <= 1 / 3,
            "x",
        ),
        row(
            "HTTP: troupe's HTTP front's added p50 / mcp-proxy's added p50",
            _get(r, "real_server", "troupe_http_vs_mcp_proxy_added_p50"),
            "<= 0.33",
            lambda v: v <= 1 / 3,
            "x",
        ),
        row(
            "memory per session at 10,000 sessions",
            large and large["bytes_per_session"],
            "<= 6 KB (6,000 B)",
            lambda v: v <= 6_000,
            "B",
        ),
        row(
            "opening 10,000 sessions",
            large and large["opens_per_s"],
            ">= 2,000 sessions/s",
            lambda v: v >= 2_000,
            "sessions/s",
        ),
        row(
            "janitor cost per due session, 100,000 vs 1,000 sessions",
            _get(r, "janitor", "ratio_100k_1k_per_due_session"),
            "<= 2 x (flat but for the heap's log n)",
            lambda v: v <= 2,
            "x",
        ),
        row(
            "supervisor restart p99",
            _get(r, "supervisor", "crash_to_serving_ms", "p99"),
            "<= 50 ms",
            lambda v: v <= 50,
            "ms",
        ),
        row(
            "100,000 passivated sessions: daemon RSS + store",
            _get(r, "passivation", "total_mib_at_100k"),
            "< 1 GB (1024 MiB)",
            lambda v: v < 1024,
            "MiB",
        ),
        row(
            "start-up (embedded default config) / import baseline p50",
            _get(r, "startup", "ratio_default_p50"),
            "<= 1.3",
            lambda v: v <= 1.3,
            "x",
        ),
        row(
            "start-up (no servers) / import baseline p50",
            _get(r, "startup", "ratio_no_servers_p50"),
            "<= 1.0",
            lambda v: v <= 1.0,
            "x",
        ),
    ]


# -- the table ---------------------------------------------------------------------


def table_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, baseline, troupe, ratio) rows for the printed table."""
    rows: list[tuple[str, str, str, str]] = []

    def add(figure: str, base: Any, value: Any, ratio_: Any) -> None:
        rows.append(
            (
                figure,
                "-" if base is None else str(base),
                "-" if value is None else str(value),
                "-" if ratio_ is None else str(ratio_),
            )
        )

    h = r.get("hop")
    if h:
        add("1 hop p50 (us): direct echo | daemon", h["direct_us"]["p50"], h["daemon_us"]["p50"], h["ratio_p50"])
        add("1 hop p99 (us): direct echo | daemon", h["direct_us"]["p99"], h["daemon_us"]["p99"], h["ratio_p99"])
    s = r.get("real_server")
    if s:
        p = s["paths_ms"]
        for base, name, label in COMPARED_PATHS:
            if base in p and name in p:
                for q in ("p50", "p95"):
                    add(label.format(q=q), p[base][q], p[name][q], round(p[name][q] / p[base][q], 2))
        if "troupe_added_p50_ms" in s and "mcp_proxy_added_p50_ms" in s:
            add(
                "2 added p50 (ms): mcp-proxy | troupe connect",
                s["mcp_proxy_added_p50_ms"],
                s["troupe_added_p50_ms"],
                s.get("troupe_vs_mcp_proxy_added_p50"),
            )
        if "troupe_http_sdk1_added_p50_ms" in s and "mcp_proxy_added_p50_ms" in s:
            add(
                "2 added p50 (ms), SDK 1.x: mcp-proxy | troupe's HTTP front",
                s["mcp_proxy_added_p50_ms"],
                s["troupe_http_sdk1_added_p50_ms"],
                s.get("troupe_http_vs_mcp_proxy_added_p50"),
            )
    w = r.get("http")
    if w:
        add(f"3 HTTP req/s, {w['clients']} clients through the front | p50 ms", None, w["rps"], w["p50_ms"])
    t = r.get("throughput")
    if t:
        for n, level in t["levels"].items():
            add(f"3 req/s at {n} sessions: raw ZMQ | daemon", level["raw_rps"], level["daemon_rps"], level["ratio"])
        for n, level in t["levels"].items():
            add(
                f"3 daemon CPU per request at {n} sessions (us) | cores",
                None,
                level["daemon_cpu_per_request_us"],
                level["daemon_cores"],
            )
        for n, level in t["levels"].items():
            if level.get("daemon_latency_us") and level.get("raw_latency_us"):
                add(
                    f"3 latency p50 at {n} sessions (us): raw | daemon",
                    level["raw_latency_us"]["p50"],
                    level["daemon_latency_us"]["p50"],
                    round(level["daemon_latency_us"]["p50"] / level["raw_latency_us"]["p50"], 2),
                )
        for share, entry in (t.get("under_load") or {}).items():
            if share == "max_rps" or entry["daemon"]["p50_us"] is None or entry["raw"]["p50_us"] is None:
                continue
            for q in ("p50", "p99"):
                add(
                    f"3 open loop at {share[:-3]} % of max ({entry['rate']} req/s), {q} (us): raw | daemon",
                    entry["raw"][f"{q}_us"],
                    entry["daemon"][f"{q}_us"],
                    ratio(entry["daemon"][f"{q}_us"], entry["raw"][f"{q}_us"]),
                )
    c = r.get("scale")
    if c:
        floor = c["bare_pykka_actor"]
        for n, size in c["sizes"].items():
            add(
                f"4 bytes/session at {n}: bare pykka actor | daemon",
                floor["bytes_per_actor"],
                size["bytes_per_session"],
                round(size["bytes_per_session"] / floor["bytes_per_actor"], 2),
            )
            add(
                f"4 opens/s at {n}: bare actor starts | daemon",
                floor["starts_per_s"],
                size["opens_per_s"],
                round(size["opens_per_s"] / floor["starts_per_s"], 2),
            )
            if int(n) >= 5_000:  # a tenth must be much more than the 256 opens in flight
                add(
                    f"4 opens/s at {n}: 10-20 % open | 80-90 % open",
                    size["opens_per_s_first_tenth"],
                    size["opens_per_s_last_tenth"],
                    round(size["opens_per_s_last_tenth"] / size["opens_per_s_first_tenth"], 2),
                )
            add(f"4 close all {n} (s): closed | forgotten", size["close_all_s"], size["close_until_forgotten_s"], None)
    v = r.get("passivation")
    if v:
        n = v["sessions"]
        add(
            f"9 bytes/passivated session at {n}: daemon | store",
            v["daemon_bytes_per_passivated_session"],
            v["store_bytes_per_session"],
            None,
        )
        add("9 reactivation (ms): p50 | p99", v["reactivation_ms"]["p50"], v["reactivation_ms"]["p99"], None)
    j = r.get("janitor")
    if j:
        small, large = j["sizes"]["1000"], j["sizes"]["10000"]
        add(
            "5 janitor pass p50 (us), 1 % due: 1,000 | 10,000",
            small["pass_1pct_us"]["p50"],
            large["pass_1pct_us"]["p50"],
            j["ratio_10k_1k_pass_1pct_p50"],
        )
        add(
            "5 janitor pass p50 (us), 10 due: 1,000 | 10,000",
            small["pass_10_due_us"]["p50"],
            large["pass_10_due_us"]["p50"],
            j["ratio_10k_1k_pass_10_due_p50"],
        )
        add(
            "5 per due session (us): 1,000 | 10,000",
            small["per_due_session_us"],
            large["per_due_session_us"],
            j["ratio_10k_1k_per_due_session"],
        )
    v = r.get("supervisor")
    if v:
        for q in ("p50", "p99"):
            add(
                f"6 restart {q} (ms): fresh actor | crash to serving",
                v["fresh_actor_ms"][q],
                v["crash_to_serving_ms"][q],
                v[f"ratio_{q}"],
            )
    u = r.get("startup")
    if u:
        add(
            "7 start-up p50 (ms): import baseline | default config",
            u["import_baseline_ms"]["p50"],
            u["default_config_ms"]["p50"],
            u["ratio_default_p50"],
        )
        add(
            "7 start-up p50 (ms): import baseline | no servers",
            u["import_baseline_ms"]["p50"],
            u["no_servers_ms"]["p50"],
            u["ratio_no_servers_p50"],
        )
    return rows


def render(report: dict[str, Any]) -> str:
    rows = table_rows(report["results"])
    header = ("figure", "baseline", "troupe", "ratio")
    widths = [max(len(str(x[i])) for x in [header, *rows]) for i in range(4)]
    lines = [
        "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(h, widths, strict=True))
        )
        for h in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("targets" + (" (quick run: figures not meaningful)" if report["meta"]["mode"] == "quick" else ""))
    for t in report["targets"]:
        verdict = "not measured" if t["met"] is None else "met" if t["met"] else "MISSED"
        lines.append(f"  {verdict:12}  {t['target']}: {t['value']} {t['unit']} (target {t['bound']})")
    for name, error in report["errors"].items():
        lines.append(f"ERROR in {name}: {error.strip().splitlines()[-1]}")
    m = report["meta"]
    lines.append(
        f"{m['mode']} run, {m['duration_s']} s on {m['machine']['cpu_model']} ({m['machine']['cores']} cores); "
        f"load average {m['loadavg_start']} -> {m['loadavg_end']}"
    )
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: checks that every measurement works (< 60 s)")
    parser.add_argument("--json", type=Path, default=BENCH / "results" / "latest.json", help="where to write the JSON")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(MEASUREMENTS)}")
    parser.add_argument("--profile", action="store_true", help="also profile the daemon at 64 sessions (py-spy)")
    parser.add_argument(
        "--setup", action="store_true", help=f"only make mcp-proxy's environment ({proxy_env.VENV.name}) and exit"
    )
    args = parser.parse_args(argv)
    if args.setup:
        print(f"mcp-proxy {proxy_env.MCP_PROXY_VERSION}: {proxy_env.ensure()}")
        return 0
    only = set(args.only.split(",")) if args.only else set(MEASUREMENTS)
    unknown = only - set(MEASUREMENTS)
    if unknown:
        parser.error(f"unknown measurement(s) {sorted(unknown)}; choose from {', '.join(MEASUREMENTS)}")
    quick = args.quick
    results_dir = BENCH / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    meta: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "loadavg_start": loadavg(),
        "source": str(SOURCE),
        "git": _git(),
        "command": " ".join([Path(PYTHON).name, "-m", "bench", *(argv if argv is not None else sys.argv[1:])]),
    }
    pool = ThreadPoolExecutor(max_workers=1)
    proxy_python: Future[Path] = Future()
    if "real_server" in only:
        venv_log = results_dir / "mcp-proxy-venv.log"
        if quick:  # made while the other measurements run
            proxy_python = pool.submit(proxy_env.ensure, venv_log)
        else:  # made before anything is measured, so that pip does not load the machine meanwhile
            try:
                proxy_python.set_result(proxy_env.ensure(venv_log))
            except Exception as exc:  # noqa: BLE001 - reported by the real_server measurement
                proxy_python.set_exception(exc)
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "startup": lambda: startup.run(quick),
        "hop": lambda: hop.run(quick),
        "real_server": lambda: real_server.run(quick, proxy_python),
        "throughput": lambda: throughput.run(quick, args.profile, results_dir),
        "http": lambda: http_load.run(quick),
        "scale": lambda: scale.run(quick),
        "janitor": lambda: _inproc("janitor", quick),
        "supervisor": lambda: _inproc("supervisor", quick),
        "passivation": lambda: passivation.run(quick),
    }
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in QUICK_ORDER if quick else MEASUREMENTS:
        if name not in only:
            continue
        step = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            results[name] = runners[name]()
            if results[name].get("errors"):
                errors[name] = json.dumps(results[name]["errors"])
        except Exception:  # noqa: BLE001 - one failed measurement must not hide the others
            errors[name] = traceback.format_exc()
        print(
            f"[bench] {name}: {'failed' if name in errors else 'done'} in {time.perf_counter() - step:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    if args.profile and "throughput" in results and "profile" in results["throughput"]:
        try:
            from bench import inline_cost

            results["throughput"]["profile"]["inline_python_work"] = inline_cost.measure(5_000 if quick else 30_000)
        except Exception:  # noqa: BLE001 - a diagnostic, not a measurement
            results["throughput"]["profile"]["inline_python_work"] = {"error": traceback.format_exc()}
    pool.shutdown(wait=False, cancel_futures=True)
    meta["loadavg_end"] = loadavg()
    meta["duration_s"] = round(time.perf_counter() - began, 1)
    report = {"meta": meta, "results": results, "targets": targets(results), "errors": errors}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(render(report))
    print(f"JSON: {os.path.relpath(args.json)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
