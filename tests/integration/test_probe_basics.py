"""The BPF program itself: loads on tracepoints, agrees with the schema, sees a process."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

from herdtrace.analysis import load
from herdtrace.probes import program
from herdtrace.schema import EVENT_DTYPE, FIELDS


def test_kernel_struct_matches_schema() -> None:
    bpf = program.load(program.plan(program.ProbeOptions(ringbuf_pages=8)))
    try:
        struct = type(bpf[b"traced"].Leaf().wakeup)
        assert ctypes.sizeof(struct) == EVENT_DTYPE.itemsize
        names = [name for name, *_ in struct._fields_]
        assert names == [f.name for f in FIELDS]
        fields = EVENT_DTYPE.fields
        assert fields is not None
        for f in FIELDS:
            assert getattr(struct, f.name).offset == fields[f.name][1], f.name
            assert getattr(struct, f.name).size == fields[f.name][0].itemsize, f.name
    finally:
        bpf.cleanup()


def test_sees_the_wakeups_of_a_started_process(tmp_path: Path) -> None:
    out = tmp_path / "select.parquet"
    script = "import select\nfor _ in range(20):\n    select.select([], [], [], 0.01)\n"
    proc = subprocess.run([sys.executable, "-m", "herdtrace", "record", "-o", str(out), "--",
                           sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    rec = load.load_recording(out)
    # Twenty timed-out selects: twenty timer wakeups inside pselect6, none absorbed.
    ps = rec.wakeups[rec.wakeups["wait_call"] == "pselect6"]
    assert len(ps) == 20
    assert (ps["outcome"] == "other").all()
    assert (ps["cause"] == "timer").all()
    assert (ps["tgid"] == rec.threads["tgid"].iloc[0]).all()
    # Under CPU contention the kernel now and then runs no probe for a timer's waking
    # (bpftrace misses it too): the wakeup is still there, found at its switch-in,
    # counted, and only its wake latency unknown.
    assert ps["waking_unseen"].sum() == rec.meta.wakings_unseen
    assert ps.loc[~ps["waking_unseen"], "wake_latency_ns"].notna().all()
    assert rec.meta.lost_events == 0
    assert rec.meta.stop_reason == "target exited"
