"""Older kernels acted out on this one: the features they lack are hidden
(HERDTRACE_HIDE_FEATURES) and herdtrace must make up for them as README's
Kernels table says, or refuse in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from herdtrace.analysis import load
from herdtrace.bench.runner import RunSpec, run_once
from tests.integration.test_exporter import check_counts_against_the_lab
from tests.integration.test_record import CONNECTIONS, check_against_truth

# What Linux 5.10 and 5.15 lack of what herdtrace uses (README: Kernels).
LINUX_5_10 = "sock:sk_data_ready,raw_sched,syscalls:sys_enter_epoll_pwait2,recursion_misses"
LINUX_5_15 = "sock:sk_data_ready,raw_sched"


@pytest.mark.parametrize("hide", [LINUX_5_10, LINUX_5_15], ids=["5.10", "5.15"])
def test_an_older_kernels_degraded_mode_still_matches_ground_truth(
        tmp_path: Path, hide: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERDTRACE_HIDE_FEATURES", hide)
    spec = RunSpec(mode="epoll-shared", workers=4, concurrency=1, connections=CONNECTIONS)
    run = run_once(spec, tmp_path / "old.parquet")
    assert run.recording is not None
    check_against_truth(run.recording, run.truth.accepts, run.truth.eagain, "epoll-shared")
    meta = load.load_recording(run.recording).meta
    assert meta.attribution == "conn_state"
    assert meta.kernel_features["sk_data_ready"].startswith("absent")
    assert meta.kernel_features["raw_sched"].startswith("classic")
    assert meta.probes["sched:sched_switch"] == "tracepoint"
    if "recursion_misses" in hide:
        assert meta.probe_misses is None
        assert meta.kernel_features["epoll_pwait2"].startswith("absent")


@pytest.mark.parametrize("hide", [LINUX_5_10, LINUX_5_15], ids=["5.10", "5.15"])
def test_an_older_kernels_exporter_still_counts_the_labs_own(
        hide: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERDTRACE_HIDE_FEATURES", hide)  # the exporter inherits it
    check_counts_against_the_lab()


def test_without_a_ring_buffer_record_refuses_in_one_line(tmp_path: Path) -> None:
    """Linux 4.18 and 5.4 have no BPF ring buffer."""
    out = subprocess.run([sys.executable, "-m", "herdtrace", "record", "-p", "1", "-o",
                          str(tmp_path / "x.parquet"), "-d", "1"], capture_output=True, text=True,
                         env={**os.environ, "HERDTRACE_HIDE_FEATURES": "ringbuf"},
                         timeout=60)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        "herdtrace: error: this kernel has no BPF ring buffer (Linux 5.8+), which the probes "
        "need: record, top and the exporter cannot run here"]
