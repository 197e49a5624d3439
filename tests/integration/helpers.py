"""Run the lab under `herdtrace record -- CMD`: traced from its first instruction."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from herdtrace.workloads.lab import GroundTruth
from herdtrace.workloads.loadgen import LoadOptions, LoadResult, run_load


def record_lab_command(
    tmp: Path, mode: str, threads: bool, connections: int = 1000, workers: int = 4,
    extra: tuple[str, ...] = (),
) -> tuple[Path, GroundTruth, LoadResult, str]:
    out = tmp / f"{mode}-cmd.parquet"
    stats = tmp / f"{mode}-truth.json"
    serve = [sys.executable, "-m", "herdtrace", "lab", "serve", "--mode", mode, "--workers",
             str(workers), "--port", "0", "--stats", str(stats)]
    if threads:
        serve.append("--threads")
    proc = subprocess.Popen([sys.executable, "-m", "herdtrace", "record", "-o", str(out), *extra,
                             "--", *serve], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    info = None
    while time.monotonic() < deadline and info is None:
        if select.select([proc.stdout], [], [], 0.2)[0]:
            line = proc.stdout.readline()
            assert line, f"recorder ended early: {proc.stderr.read() if proc.stderr else ''}"
            info = json.loads(line)
    assert info is not None, "lab server under record did not become ready"
    load = run_load(LoadOptions(port=info["port"], concurrency=1, connections=connections))
    os.kill(info["pid"], signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out, GroundTruth.from_json(json.loads(stats.read_text())), load, err
