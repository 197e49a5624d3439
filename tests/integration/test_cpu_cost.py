"""A wakeup's on-CPU time against the kernel's own run time (/proc schedstat).

The lab serves the same K sequential connections in a herd mode (epoll-shared) and a
wake-one mode (epoll-exclusive), first untraced, then recorded, and the server's
on-CPU time per connection is read from schedstat around each load."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from herdtrace import procfs
from herdtrace.analysis import load, metrics
from herdtrace.bench.runner import RecordingProcess
from herdtrace.workloads.lab import LabServer
from herdtrace.workloads.loadgen import LoadOptions, run_load
from herdtrace.workloads.server import ServerOptions

K = 1000
MODES = ("epoll-shared", "epoll-exclusive")
UNTRACED_ROUNDS = 3  # untraced CPU per connection swings 20-30% run to run here


def served(mode: str, out: Path | None) -> tuple[float, metrics.Summary | None]:
    """Server on-CPU µs per connection over K connections (schedstat), and the
    recording's summary when `out` is given."""
    with LabServer(ServerOptions(mode=mode, workers=4, port=0)) as srv:
        rec = RecordingProcess(srv.pid, out, ()) if out else None
        time.sleep(0.3)  # every worker in its wait
        pids = procfs.descendants((srv.pid,))
        before = procfs.run_ns(pids)
        result = run_load(LoadOptions(port=srv.port, concurrency=1, connections=K))
        after = procfs.run_ns(pids)
        truth = srv.stop()
        if rec is not None:
            rec.interrupt()
            rec.wait()
    assert result.completed == K and truth.accepts == K
    summary = metrics.summarize(load.load_recording(out)) if out else None
    return (after - before) / K / 1e3, summary


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[float, float, metrics.Summary]]:
    tmp = tmp_path_factory.mktemp("cpu")
    untraced: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(UNTRACED_ROUNDS):  # interleaved: a slow spell of the VM hits both
        for mode in MODES:
            untraced[mode].append(served(mode, None)[0])
    out = {}
    for mode in MODES:
        traced, summary = served(mode, tmp / f"{mode}.parquet")
        assert summary is not None
        out[mode] = (statistics.median(untraced[mode]), traced, summary)
    return out


def test_wakeups_carry_most_of_the_servers_run_time(runs: dict) -> None:
    """Summed over every wakeup, cpu_ns is the server's run time in the same run,
    less the switches' own time the kernel charges before the switch tracepoint."""
    for mode, (_, traced, s) in runs.items():
        assert s.lost_events == 0
        assert s.cpu_us_per_connection is not None
        share = s.cpu_us_per_connection / traced
        print(f"{mode}: schedstat {traced:.1f} us/conn, wakeups' cpu_ns {s.cpu_us_per_connection:.1f}"
              f" ({share:.2f})")
        # Seen: 0.84-0.91 herd, 0.95-0.97 wake-one; up to 1.06 when the host was busy:
        # the wakeup's clock runs on while the vCPU is stolen, schedstat's does not.
        assert 0.75 <= share <= 1.10, mode


def test_wasted_cpu_prices_the_herd_not_wake_one(runs: dict) -> None:
    shared, exclusive = runs["epoll-shared"][2], runs["epoll-exclusive"][2]
    assert shared.wasted_cpu_us_per_connection > 2.0  # ~3 idle wakeups a connection
    assert exclusive.wasted_cpu_us_per_connection < 0.25 * shared.wasted_cpu_us_per_connection
    assert shared.wasted_cores is not None and shared.wasted_cpu_s is not None
    duration = shared.duration_s
    assert shared.wasted_cores == pytest.approx(shared.wasted_cpu_s / duration)


def test_the_herds_cost_against_schedstat_untraced(runs: dict) -> None:
    """What the herd costs the server, untraced: schedstat per connection, herd mode
    minus wake-one. The idle wakeups' own time (wasted CPU) is part of it, a lower
    bound: the herd also slows the wakeup that accepts (caches, the listener's lock).
    Every wakeup's time (cpu_us_per_connection) carries that part as well, but its
    difference moves with the two runs' noise (seen below wasted CPU's once)."""
    untraced = runs["epoll-shared"][0] - runs["epoll-exclusive"][0]
    shared, exclusive = runs["epoll-shared"][2], runs["epoll-exclusive"][2]
    wasted = shared.wasted_cpu_us_per_connection - exclusive.wasted_cpu_us_per_connection
    every = shared.cpu_us_per_connection - exclusive.cpu_us_per_connection
    print(f"untraced schedstat difference {untraced:.1f} us/conn; wasted CPU difference "
          f"{wasted:.1f} ({wasted / untraced:.2f}); every wakeup's {every:.1f} ({every / untraced:.2f})")
    assert untraced > 0
    assert 0 < wasted < untraced
