"""However recording ends, the file is a valid recording of everything captured."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from herdtrace.analysis import load
from herdtrace.bench.runner import RecordingProcess
from herdtrace.workloads.lab import LabServer
from herdtrace.workloads.loadgen import LoadOptions, run_load
from herdtrace.workloads.server import ServerOptions

CONNECTIONS = 300


def analyze_json(path: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "herdtrace", "analyze", str(path), "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["recordings"][0]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_leaves_a_complete_recording(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "stopped.parquet"
    with LabServer(ServerOptions(mode="epoll-shared", workers=4)) as srv:
        rec = RecordingProcess(srv.pid, out)
        run_load(LoadOptions(port=srv.port, concurrency=1, connections=CONNECTIONS))
        rec.proc.send_signal(sig)
        lines = rec.wait()
        assert rec.proc.wait(30) == 0
        truth = srv.stop()  # after the recorder stopped: nothing happens in between
    assert any(ln.startswith("herdtrace: recorded") for ln in lines)
    meta = load.load_recording(out).meta
    assert meta.stop_reason == "signal"
    summary = analyze_json(out)
    assert summary["accepts"] == truth.accepts == CONNECTIONS
    assert summary["eagain"] == truth.eagain
    assert summary["lost_events"] == 0
    assert summary["herd_factor"] > 2


def test_recorder_killed_still_leaves_a_readable_file(tmp_path: Path) -> None:
    out = tmp_path / "killed.parquet"
    with LabServer(ServerOptions(mode="epoll-shared", workers=4)) as srv:
        rec = RecordingProcess(srv.pid, out)
        run_load(LoadOptions(port=srv.port, concurrency=1, connections=CONNECTIONS))
        time.sleep(1.5)  # the recorder drains and spools what it saw
        rec.proc.kill()
        rec.proc.wait()
        srv.stop()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (out.with_name(out.name + ".spool").exists()
                                           or not out.exists()):
        time.sleep(0.1)
    recording = load.load_recording(out)
    assert recording.meta.stop_reason == "recorder died"
    summary = analyze_json(out)
    assert summary["lost_events"] is None  # nobody could count them: not made up
    assert summary["accepts"] == CONNECTIONS
