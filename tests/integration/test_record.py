"""`herdtrace record` against the lab server's own ground truth, on this kernel."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from herdtrace.analysis import load, metrics
from herdtrace.bench.runner import RunSpec, run_once
from herdtrace.cli import app
from herdtrace.workloads.lab import LabServer
from herdtrace.workloads.loadgen import LoadOptions, run_load
from herdtrace.workloads.server import ServerOptions
from tests.integration.helpers import record_lab_command

CONNECTIONS = 1000
# Herd factor: the herd wakes several of the 4 workers, wake-one paths one.
HERD_FLOOR = {"epoll-shared": 2.0}
WAKE_ONE_CEILING = {"accept-blocking": 1.2, "reuseport": 1.2}
# EPOLLEXCLUSIVE wakes one waiter, but a second worker back from serving may still
# race the accept now and then (EAGAIN is rare, not zero).
EXCLUSIVE_CEILING = 1.2


def check_against_truth(path: Path, truth_accepts: int, truth_eagain: int,
                        mode: str) -> metrics.Summary:
    summary = metrics.summarize(load.load_recording(path))
    assert summary.lost_events == 0
    assert summary.accepts == truth_accepts == CONNECTIONS
    assert summary.eagain == truth_eagain
    assert summary.connections == (CONNECTIONS if summary.connections_followed else 0)
    per_accept = summary.herd_factor
    assert per_accept is not None and summary.herd_factor_basis == "listener"
    if mode in HERD_FLOOR:
        assert per_accept > HERD_FLOOR[mode]
    if mode in WAKE_ONE_CEILING:
        assert per_accept <= WAKE_ONE_CEILING[mode]
        assert truth_eagain == 0
    if mode == "epoll-exclusive":
        assert per_accept <= EXCLUSIVE_CEILING
        assert truth_eagain <= 0.05 * truth_accepts
    return summary


@pytest.mark.parametrize("threads", [False, True], ids=["processes", "threads"])
@pytest.mark.parametrize("mode", ["epoll-shared", "epoll-exclusive", "accept-blocking", "reuseport"])
def test_record_by_pid_matches_ground_truth(tmp_path: Path, mode: str, threads: bool) -> None:
    spec = RunSpec(mode=mode, workers=4, threads=threads, concurrency=1, connections=CONNECTIONS)
    run = run_once(spec, tmp_path / f"{mode}.parquet")
    assert run.load.completed == CONNECTIONS and run.load.errors == 0
    assert run.recording is not None
    summary = check_against_truth(run.recording, run.truth.accepts, run.truth.eagain, mode)
    # Workers are the threads that waited; with threads they share one process.
    # EPOLLEXCLUSIVE's idle waiters are never woken, so never seen (README: workers).
    assert len(summary.accepts_per_thread) == 4 or mode == "epoll-exclusive"
    assert sum(summary.accepts_per_thread.values()) == CONNECTIONS


@pytest.mark.parametrize("mode", ["epoll-shared", "select-shared", "accept-blocking"])
def test_without_connections_a_started_lab_matches_ground_truth(tmp_path: Path, mode: str) -> None:
    """--no-connections from the server's first instruction: its listen() comes after
    the probes, and listener wakeups are told from the socket alone."""
    path, truth, result, err = record_lab_command(tmp_path, mode, False, CONNECTIONS,
                                                  extra=("--no-connections",))
    assert result.completed == CONNECTIONS and result.errors == 0
    summary = check_against_truth(path, truth.accepts, truth.eagain, mode)
    assert not summary.connections_followed
    assert "connections not followed" in err
    assert summary.accept_latency_us is None
    # Nearly every accept came out of a listener wakeup (a worker still awake takes
    # the odd one without), each readiness with its own id.
    assert summary.listener_outcomes is not None
    assert summary.listener_outcomes["accepted"] >= 0.9 * CONNECTIONS
    assert summary.threads_woken_per_connection is not None
    if mode in HERD_FLOOR:
        assert summary.threads_woken_per_connection > HERD_FLOOR[mode]


@pytest.mark.parametrize("threads", [False, True], ids=["processes", "threads"])
@pytest.mark.parametrize("mode", ["epoll-shared", "accept-blocking", "reuseport"])
def test_record_command_from_first_instruction(tmp_path: Path, mode: str, threads: bool) -> None:
    path, truth, result, err = record_lab_command(tmp_path, mode, threads, CONNECTIONS)
    assert result.completed == CONNECTIONS
    summary = check_against_truth(path, truth.accepts, truth.eagain, mode)
    assert f"{summary.wakeups} wakeups, {CONNECTIONS} accepts" in err
    rec = load.load_recording(path)
    # The server and every worker it forked or spawned were followed from the start.
    assert rec.meta.target.command[1:4] == ["-m", "herdtrace", "lab"]
    assert rec.threads["tid"].nunique() >= 5


def record_lab_with_ring(tmp_path: Path, pages: int) -> tuple[Path, int, int]:
    from herdtrace.bench.runner import RecordingProcess
    from herdtrace.workloads.lab import LabServer
    from herdtrace.workloads.loadgen import LoadOptions, run_load
    from herdtrace.workloads.server import ServerOptions

    out = tmp_path / f"ring{pages}.parquet"
    with LabServer(ServerOptions(mode="epoll-shared", workers=4)) as srv:
        rec = RecordingProcess(srv.pid, out, ("--buffer-pages", str(pages)))
        run_load(LoadOptions(port=srv.port, concurrency=1, connections=CONNECTIONS))
        truth = srv.stop()
        rec.wait()
    return out, truth.accepts, truth.eagain


def test_small_ring_wraps_without_loss(tmp_path: Path) -> None:
    """256 KiB of ring (2048 records) for ~6000 records: the reader follows it round."""
    out, accepts, eagain = record_lab_with_ring(tmp_path, 64)
    loaded = load.load_recording(out)
    assert loaded.meta.ringbuf_bytes == 64 * 4096
    assert (loaded.meta.rows or 0) > 2 * 2048
    check_against_truth(out, accepts, eagain, "epoll-shared")


def test_lost_events_are_counted_and_shown(tmp_path: Path) -> None:
    """One page (32 records) cannot hold 10 ms of this load: records are lost, and said so."""
    out, accepts, _ = record_lab_with_ring(tmp_path, 1)
    rec = load.load_recording(out)
    lost = rec.meta.lost_events
    assert lost is not None and lost > 0 and sum(rec.meta.lost_per_cpu) == lost
    summary = metrics.summarize(rec)
    assert summary.lost_events == lost
    assert summary.accepts < accepts  # what was lost is missing, not made up
    result = CliRunner().invoke(app, ["analyze", str(out)])
    assert "lost events" in result.output and str(lost) in result.output


def test_one_shared_epoll_spreads_the_herd_by_rewaking(tmp_path: Path) -> None:
    """One epoll instance shared by every worker: the listener wakes one waiter, which,
    leaving epoll_wait with the level-triggered listener still ready, wakes the next.
    Those wakeups have no sk_data_ready of their own and are the listener's all the same."""
    spec = RunSpec(mode="epoll-one-fd", workers=4, concurrency=1, connections=CONNECTIONS)
    run = run_once(spec, tmp_path / "one-fd.parquet")
    assert run.recording is not None
    summary = check_against_truth(run.recording, run.truth.accepts, run.truth.eagain, "epoll-one-fd")
    assert (summary.herd_factor or 0) > 1.5 and (summary.threads_woken_per_connection or 0) > 1.5
    w = load.load_recording(run.recording).wakeups
    rewoken = w[(w["cause"] == "listener") & w["epoll_rewake"]]
    assert len(rewoken) > CONNECTIONS / 2
    assert (rewoken["waker_tgid"] != 0).all() and rewoken["conn_id"].notna().all()


def test_command_that_goes_to_the_background_is_followed(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "daemon.parquet"
    proc = subprocess.run([sys.executable, "-m", "herdtrace", "record", "-o", str(out), "--",
                           "sh", "-c", "sleep 2 & exit 0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "went to the background" in proc.stderr and "daemon off" in proc.stderr
    rec = load.load_recording(out)
    assert rec.meta.stop_reason == "target exited"
    assert (rec.duration_s or 0) > 1.5  # followed the sleep, not just the shell
    assert len(rec.meta.target.followed_pids) >= 2


def test_pid_without_a_listener_is_warned_about(tmp_path: Path) -> None:
    import subprocess
    import sys

    idle = subprocess.Popen(["sleep", "30"])
    try:
        proc = subprocess.run([sys.executable, "-m", "herdtrace", "record", "-p", str(idle.pid),
                               "-d", "0.5", "-o", str(tmp_path / "idle.parquet")],
                              capture_output=True, text=True, timeout=60)
    finally:
        idle.kill()
    assert proc.returncode == 0, proc.stderr
    assert "has no TCP listening socket" in proc.stderr
    assert "1 thread of pid" in proc.stderr and "for 0.5 s" in proc.stderr


def test_record_by_port_finds_the_server(tmp_path: Path) -> None:
    """--port P traces whoever listens on P: here the lab's parent and workers."""
    out = tmp_path / "port.parquet"
    with LabServer(ServerOptions(mode="epoll-shared", workers=3)) as srv:
        proc = subprocess.Popen([sys.executable, "-m", "herdtrace", "record", "-P", str(srv.port),
                                 "-o", str(out)], stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith("herdtrace: recording")
        load_result = run_load(LoadOptions(port=srv.port, concurrency=1, connections=200))
        truth = srv.stop()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    rec = load.load_recording(out)
    assert srv.pid in rec.meta.target.pids and len(rec.meta.target.pids) == 4
    s = metrics.summarize(rec)
    assert s.accepts == truth.accepts == load_result.completed == 200
    assert s.eagain == truth.eagain
