"""Measurement 7, start-up: from launching ``troupe serve`` until ``health`` succeeds.

Two configurations: the embedded default (no ``--config``: it serves the
example server, so start-up includes starting its adapter process and waiting
for it to register; ready means ``health`` lists it), and a configuration file
with no servers. The client polls every 2 ms: it waits for the front socket
file, then asks ``health`` (`mcp_troupe.transport.client.Client.health`).

Baseline: launching ``python -c "import os, mcp_troupe.actors.cli.main, mcp_troupe.actors.daemon.service;
os._exit(0)"`` until it exits, i.e. the interpreter's start and the daemon's imports, which no daemon can
avoid (the CLI imports the daemon's service only for ``serve``, so both are named).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from typing import Any

from bench.common import NO_SERVERS_CONFIG, PYTHON, SOURCE, bench_env, start_daemon, summary, wait_serving


def _import_time() -> float:
    began = time.perf_counter()
    subprocess.run(
        [PYTHON, "-c", "import os, mcp_troupe.actors.cli.main, mcp_troupe.actors.daemon.service; os._exit(0)"],
        cwd=SOURCE,
        env=bench_env(),
        check=True,
        timeout=60,
    )
    return time.perf_counter() - began


def _startup(config: str | None, servers: int) -> float:
    daemon = start_daemon(config=config, wait=False)
    try:
        return wait_serving(daemon, servers, timeout=60, interval=0.002)
    finally:
        daemon.stop()


def run(quick: bool) -> dict[str, Any]:
    reps = 1 if quick else 10
    samples: dict[str, list[float]] = {"default_config": [], "no_servers": [], "import_baseline": []}
    for _ in range(reps):
        samples["import_baseline"].append(_import_time())
        samples["default_config"].append(_startup(None, 1))
        samples["no_servers"].append(_startup(NO_SERVERS_CONFIG, 0))
    ms = 1000.0
    result: dict[str, Any] = {
        "what": "launch of troupe serve until health answers (default config: with the example adapter "
        "registered); baseline: python -c 'import mcp_troupe.actors.cli.main, mcp_troupe.actors.daemon.service' "
        "(exit without teardown); milliseconds",
        "repetitions": reps,
    }
    for name, values in samples.items():
        result[f"{name}_ms"] = summary(values, ms, 1)
    base = statistics.median(samples["import_baseline"])
    result["ratio_default_p50"] = round(statistics.median(samples["default_config"]) / base, 2)
    result["ratio_no_servers_p50"] = round(statistics.median(samples["no_servers"]) / base, 2)
    return result


if __name__ == "__main__":
    import sys

    json.dump(run("--quick" in sys.argv), sys.stdout, indent=1)
