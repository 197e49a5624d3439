"""Another server's listener, busy beside a traced one, is not the traced one's.

Without connections followed, a listener wakeup is a waking that comes right after
a listening socket became readable, by the same task on the same CPU. A timer's
waking of a traced worker runs in an interrupt, in whatever task the CPU was
running: when that was another server's client, its listener was readable a moment
before, and was taken for the traced listener."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from herdtrace.analysis import load
from herdtrace.bench.runner import RecordingProcess
from herdtrace.workloads import real_servers
from herdtrace.workloads.lab import LabServer
from herdtrace.workloads.server import ServerOptions

OTHER_SECONDS = 4  # ab's load on the other server: this long, or this many connections
OTHER_CONNECTIONS = 100_000


@pytest.mark.parametrize("extra", [("--no-connections",), ()], ids=["light", "full"])
def test_a_busy_untraced_listener_wakes_nothing_traced(tmp_path: Path, extra: tuple[str, ...]) -> None:
    if shutil.which("ab") is None or real_servers.python_tool("uvicorn") is None:
        pytest.skip("ab or uvicorn missing: run make setup")
    out = tmp_path / "traced.parquet"
    # uvicorn's idle workers wake on their event loops' timers (~10 a second each);
    # nothing connects to it. The lab server beside it takes ab's load, untraced.
    with real_servers.uvicorn(tmp_path) as traced, \
            LabServer(ServerOptions(mode="epoll-exclusive", workers=2, port=0)) as other:
        rec = RecordingProcess(traced.pid, out, extra)
        try:
            done = subprocess.run(["ab", "-q", "-r", "-t", str(OTHER_SECONDS), "-n",
                                   str(OTHER_CONNECTIONS), "-c", "4",
                                   f"http://127.0.0.1:{other.port}/"],
                                  capture_output=True, text=True, timeout=120)
        finally:
            rec.interrupt()
            rec.wait()
        assert done.returncode == 0, done.stderr
    r = load.load_recording(out)
    assert other.port not in r.meta.target.listen_ports
    w = r.wakeups
    assert (w["cause"] == "timer").sum() >= 40  # the timers' wakings were there to misplace
    listener = w[w["cause"] == "listener"]
    assert listener.empty, listener["lport"].value_counts().to_dict()
