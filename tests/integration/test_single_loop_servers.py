"""Servers where one event loop accepts (waitress, daphne): recognised with their
version, and no herd, beside the independent bpftrace counter."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from herdtrace.analysis import metrics, verdict
from herdtrace.workloads import real_servers
from tests.integration.test_real_servers import REQUESTS, ServerFactory, close, in_window, record_beside_bpftrace

SERVERS: dict[str, ServerFactory] = {"waitress": real_servers.waitress,
                                     "daphne": real_servers.daphne}


@pytest.mark.parametrize("name", list(SERVERS))
def test_one_loop_accepting_is_no_herd(tmp_path: Path, name: str) -> None:
    script = "waitress-serve" if name == "waitress" else name
    if real_servers.python_tool(script) is None:
        pytest.skip(f"{name} is not installed: run make setup")
    rec, counts = record_beside_bpftrace(tmp_path, SERVERS[name], REQUESTS)
    mine = in_window(rec, counts)
    assert close(mine["accepts"], counts.accepts, 0.005), (mine, counts)
    assert close(mine["eagain"], counts.eagain, 0.005), (mine, counts)
    folded = rec.meta.wakings_merged + rec.meta.wakings_uninterruptible
    assert close(mine["wakeups"] + folded, counts.wakings + counts.wakings_missed, 0.02), (
        mine, folded, counts)
    summary = metrics.summarize(rec)
    assert summary.accepts == REQUESTS
    assert summary.lost_events == 0 and summary.probe_misses == 0
    assert summary.workers == 1
    assert summary.threads_woken_per_connection is not None
    assert summary.threads_woken_per_connection <= 1.05
    v = verdict.judge(rec, summary)
    assert v.level == "no-herd" and v.fixes == ()
    assert v.text.endswith("one thread took every connection")
    assert v.server is not None
    assert v.server["name"] == name and v.server["version"] == metadata.version(name)
    assert v.server["details"]["processes"] == "1"
