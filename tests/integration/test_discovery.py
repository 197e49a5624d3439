"""A thread that blocks in its wait while discovery traces it.

Discovery reads /proc/TID/syscall, then puts the thread in the kernel's table. A
worker that enters its wait between the two (a server starting while `top` or the
exporter rescans) was invisible to the kernel until the wait returned: its first
accept went unseen, and a worker whose wakeups were all absorbed never showed. Here
every /proc read is made stale on purpose (as if each one had lost that race), and
the recording must still agree with the lab's own counts."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from herdtrace.analysis import load, metrics
from herdtrace.collectors import targets
from herdtrace.collectors.bpf_collector import Recorder
from herdtrace.collectors.session import RecordOptions
from herdtrace.workloads.lab import LabServer
from herdtrace.workloads.loadgen import LoadOptions, run_load
from herdtrace.workloads.server import ServerOptions

CONNECTIONS = 400


class RacedDiscovery(Recorder):
    """/proc read just before each thread blocked: no wait is seeded from it."""

    def _trace(self, infos: list[targets.ThreadInfo], now_ns: int) -> list[targets.ThreadInfo]:
        return super()._trace([dataclasses.replace(i, syscall=()) for i in infos], now_ns)


@pytest.mark.parametrize("mode", ["accept-blocking", "epoll-shared"])
def test_a_wait_entered_during_discovery_is_caught(tmp_path: Path, mode: str) -> None:
    out = tmp_path / f"{mode}.parquet"
    with LabServer(ServerOptions(mode=mode, workers=3, port=0)) as srv:
        recorder = RacedDiscovery(RecordOptions(output=out, pids=(srv.pid,)))
        ready, stop = threading.Event(), threading.Event()
        done: list[object] = []
        worker = threading.Thread(
            target=lambda: done.append(recorder.run(stop, lambda _: ready.set())))
        worker.start()
        try:
            assert ready.wait(60), "the recorder never attached"
            result = run_load(LoadOptions(port=srv.port, concurrency=1, connections=CONNECTIONS))
        finally:
            stop.set()
            worker.join(60)
            recorder.close()
        truth = srv.stop()
    assert done, "the recorder failed: see the log above"
    assert result.completed == CONNECTIONS == truth.accepts
    summary = metrics.summarize(load.load_recording(out))
    assert summary.lost_events == 0
    assert summary.accepts == truth.accepts  # each worker's first accept included
    assert summary.eagain == truth.eagain
    # Every worker that waited is seen, not only those whose wait returned.
    if mode == "epoll-shared":
        assert summary.herd_factor is not None and summary.herd_factor > 2.0
