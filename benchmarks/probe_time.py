"""Kernel time of each tracer's BPF programs under the same load.

With kernel.bpf_stats_enabled=1 the kernel counts every program's runs and run
time; `bpftool prog show` reports them. Throughput ratios swing ±10% between runs
on a small VM; these counts do not, so they say which probe costs what. The
sysctl adds a clock read per run, so this runs apart from the throughput runs.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks import servers, tracers

STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")


def snapshot() -> dict[int, tuple[str, int, int]]:
    """Every loaded program: id -> (name, run_cnt, run_time_ns)."""
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True,
                         text=True, check=True).stdout
    return {p["id"]: (p.get("name", "?"), p.get("run_cnt", 0), p.get("run_time_ns", 0))
            for p in json.loads(out)}


@contextlib.contextmanager
def bpf_stats() -> Iterator[None]:
    before = STATS_SYSCTL.read_text().strip()
    STATS_SYSCTL.write_text("1")
    try:
        yield
    finally:
        STATS_SYSCTL.write_text(before)


Throughput = Callable[[int, float], float]  # (port, seconds) -> req/s


def measure(kind: type[tracers.Tracer], target: str, seconds: float,
            throughput: Throughput) -> dict[str, Any]:
    """One run of `kind` on `target` under saturating load: BPF cores per program name."""
    work = tracers.workdir()
    tracer = kind()
    with servers.targets(work)[target] as (pids, port):
        tracer.start(pids, work)
        before, t0 = snapshot(), time.monotonic()
        rps = throughput(port, seconds)
        after, span = snapshot(), time.monotonic() - t0
        tracer.stop()
    per_probe: dict[str, dict[str, float]] = {}
    for prog_id, (name, runs, ns) in after.items():
        if prog_id not in before or runs <= before[prog_id][1]:
            continue
        d_runs, d_ns = runs - before[prog_id][1], ns - before[prog_id][2]
        row = per_probe.setdefault(name, {"runs_per_s": 0.0, "cores": 0.0})
        row["runs_per_s"] += d_runs / span
        row["cores"] += d_ns / span / 1e9
    for row in per_probe.values():
        row["ns_per_run"] = row["cores"] * 1e9 / row["runs_per_s"]
    return {"rps": rps, "cores": sum(r["cores"] for r in per_probe.values()),
            "per_probe": dict(sorted(per_probe.items(), key=lambda kv: -kv[1]["cores"]))}


def run(kinds: list[type[tracers.Tracer]], target: str, seconds: float,
        throughput: Throughput) -> dict[str, dict[str, Any]]:
    with bpf_stats():
        return {kind().name: measure(kind, target, seconds, throughput) for kind in kinds}
