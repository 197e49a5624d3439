"""The lab server in every Linux mode: answers every connection, counts its own truth."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from herdtrace.bench.tools import run_ab
from herdtrace.cli import app
from herdtrace.errors import HerdtraceError
from herdtrace.workloads import modes
from herdtrace.workloads.lab import LabServer
from herdtrace.workloads.loadgen import LoadOptions, run_load
from herdtrace.workloads.server import ServerOptions

K = 200
WAKE_ONE_PATHS = ("accept-blocking", "reuseport")


@pytest.mark.parametrize("threads", [False, True], ids=["processes", "threads"])
@pytest.mark.parametrize("mode", modes.LINUX_MODES)
def test_every_connection_answered_and_counted(mode: str, threads: bool) -> None:
    with LabServer(ServerOptions(mode=mode, workers=4, threads=threads)) as srv:
        result = run_load(LoadOptions(port=srv.port, concurrency=1, connections=K))
        ab = run_ab(LoadOptions(port=srv.port, concurrency=1, connections=K)) \
            if shutil.which("ab") else None
        truth = srv.stop()
    assert result.completed == K and result.errors == 0
    expected = K
    if ab is not None:
        assert ab.completed == K and ab.errors == 0
        expected += K
    assert truth.accepts == expected
    assert sum(w["accepts"] for w in truth.per_worker) == expected
    assert len(truth.per_worker) == 4 and all(w["tid"] > 0 for w in truth.per_worker)
    assert truth.errors == 0
    if mode in WAKE_ONE_PATHS:
        assert truth.eagain == 0
    # Each worker's wait returns cover its accepts, its EAGAINs and its stop wakeup.
    for w in truth.per_worker:
        assert w["wait_returns"] >= w["accepts"] + w["eagain"]


def test_open_loop_measures_from_the_intended_time() -> None:
    with LabServer(ServerOptions(mode="epoll-exclusive", workers=2)) as srv:
        result = run_load(LoadOptions(port=srv.port, rate=500, duration=0.5))
        truth = srv.stop()
    assert result.loop == "open"
    assert 240 <= result.started <= 260
    assert result.completed == truth.accepts == result.started
    assert result.latency_ms["p50"] is not None and result.latency_ms["p50"] > 0
    assert 0.45 < result.duration_s < 2.0


def test_serve_writes_stats_and_prints_totals(tmp_path) -> None:
    stats = tmp_path / "truth.json"
    proc = subprocess.Popen([sys.executable, "-m", "herdtrace", "lab", "serve", "--mode",
                             "poll-shared", "--workers", "3", "--port", "0", "--stats", str(stats)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    run_load(LoadOptions(port=info["port"], concurrency=2, connections=50))
    proc.terminate()
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    data = json.loads(stats.read_text())
    assert data["accepts"] == 50 and len(data["per_worker"]) == 3 and data["stuck_workers"] == []
    assert "accepts=50" in err


runner = CliRunner()


def one_line_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_a_refused_serve_leaves_the_signal_mask_as_it_was() -> None:
    """`lab serve` blocks SIGINT/SIGTERM to wait for them; a serve that fails (the port
    in use) must not leave them blocked in its caller: every process the caller
    started afterwards inherited the block (bpftrace then ignored Ctrl-C)."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        line = one_line_error(["lab", "serve", "--port", str(taken.getsockname()[1])])
    assert "in use" in line
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before


def test_unknown_mode_lists_modes() -> None:
    line = one_line_error(["lab", "serve", "--mode", "herd"])
    assert "unknown mode 'herd'" in line and "epoll-exclusive" in line


def test_kqueue_modes_refused_on_linux() -> None:
    assert "kqueue" in one_line_error(["lab", "serve", "--mode", "kqueue"])
    line = one_line_error(["lab", "serve", "--mode", "kqueue-wakeone"])
    assert "kqueue" in line


def test_workers_must_be_positive() -> None:
    assert "at least 1" in one_line_error(["lab", "serve", "--workers", "0", "--port", "0"])


@pytest.mark.parametrize("mode", ["epoll-shared", "reuseport"])
def test_port_in_use(mode: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = one_line_error(["lab", "serve", "--mode", mode, "--port", str(port)])
    assert f"port {port}" in line and "in use" in line


def test_load_refuses_non_loopback_and_bad_combinations() -> None:
    assert "loopback" in one_line_error(["lab", "load", "--host", "10.0.0.1", "-c", "1", "-k", "1"])
    assert "exactly one of --rate" in one_line_error(["lab", "load", "--rate", "10", "-c", "1"])
    assert "exactly one of --connections" in one_line_error(["lab", "load", "-k", "1", "-d", "1"])


def test_load_with_nothing_listening_is_an_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        line = one_line_error(["lab", "load", "-P", str(port), "-c", "1", "-k", "3"])
    assert "no request succeeded (ECONNREFUSED x3)" in line


def test_lab_server_reports_startup_failure() -> None:
    with pytest.raises(HerdtraceError, match="did not start"):
        LabServer(ServerOptions(mode="select-shared", workers=0)).start()


def test_load_counts_refused_connections() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        result = run_load(LoadOptions(port=port, concurrency=2, connections=10))
    assert result.completed == 0 and result.errors == 10
    assert result.error_kinds == {"ECONNREFUSED": 10}
