"""Analysis speed and memory on synthetic recordings of millions of wakeups.

Each size is generated (vectorized, a million connections at a time) into a real
recording, then analysed in a fresh process, in memory and streamed, so that
each peak RSS is its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from herdtrace.collectors.writer import RecordingWriter
from herdtrace.schema import EVENT_DTYPE, SCHEMA_VERSION, Flag, Kind, Outcome, WaitCall

WORKERS = 8
ROW_GROUP = 1 << 16
ANALYSE = """
import json, sys, time
t0 = time.perf_counter()
from herdtrace.analysis import load, metrics, stream
if sys.argv[2] == "stream":
    s = stream.summarize_streaming(sys.argv[1])
else:
    rec = load.load_recording(sys.argv[1])
    s = metrics.summarize(rec)
    metrics.per_thread(rec)
    metrics.per_connection(rec)
# VmHWM: this process image's own peak (ru_maxrss would include the parent's, from
# before exec).
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")][0].split()[1]
print(json.dumps({"seconds": time.perf_counter() - t0, "wakeups": s.wakeups,
                  "peak_kib": int(hwm)}))
"""


def synthetic(n_wakeups: int, seed: int = 1, first_conn: int = 1,
              start_ns: int = 0) -> np.ndarray:
    """A herd: each connection wakes WORKERS/2 threads, one accepts, the rest idle."""
    rng = np.random.default_rng(seed)
    per_conn = WORKERS // 2
    n_conn = n_wakeups // per_conn
    conn_ts = np.uint64(start_ns) + np.cumsum(rng.integers(20_000, 200_000, n_conn, dtype=np.uint64))
    conns = np.zeros(n_conn, dtype=EVENT_DTYPE)
    conns["kind"], conns["ts"] = Kind.CONN, conn_ts
    conns["conn_id"] = np.arange(first_conn, first_conn + n_conn)
    conns["lport"], conns["rport"] = 8080, 1024 + np.arange(n_conn) % 60000
    raddr = np.zeros((n_conn, 16), np.uint8)
    raddr[:, 10:12] = 0xFF
    raddr[:, 12], raddr[:, 15] = 127, 1
    conns["raddr"] = raddr.view("S16").ravel()

    w = np.zeros(n_conn * per_conn, dtype=EVENT_DTYPE)
    w["kind"] = Kind.WAKEUP
    w["ts"] = np.repeat(conn_ts, per_conn) + rng.integers(2_000, 30_000, len(w), dtype=np.uint64)
    w["oncpu_ts"] = w["ts"] + rng.integers(1_000, 80_000, len(w), dtype=np.uint64)
    tids = rng.permuted(np.tile(np.arange(100, 100 + WORKERS), (n_conn, 1)), axis=1)[:, :per_conn]
    w["tid"] = w["tgid"] = tids.ravel()
    w["conn_id"] = np.repeat(conns["conn_id"], per_conn)
    w["wait_call"], w["flags"] = WaitCall.EPOLL_WAIT, Flag.NET_CAUSE
    first = np.arange(len(w)) % per_conn == 0
    w["outcome"] = np.where(first, Outcome.ACCEPTED,
                            rng.choice([Outcome.ABSORBED, Outcome.EAGAIN], len(w), p=[0.8, 0.2]))
    w["accepts"] = first

    acc = np.zeros(n_conn, dtype=EVENT_DTYPE)
    acc["kind"], acc["tid"] = Kind.ACCEPT, w["tid"][first]
    acc["tgid"] = acc["tid"]
    acc["ts"] = w["oncpu_ts"][first] + 5_000
    acc["ret"], acc["rport"], acc["raddr"] = 7, conns["rport"], conns["raddr"]
    acc["flags"], acc["wait_call"] = Flag.PEER, WaitCall.ACCEPT4
    return np.concatenate([conns, w, acc])


CHUNK = 4_000_000  # wakeups generated at once: memory stays flat for any size


def write(path: Path, n_wakeups: int) -> int:
    writer = RecordingWriter(path)
    wakeups, first_conn, end_ns = 0, 1, 0
    for i, start in enumerate(range(0, n_wakeups, CHUNK)):
        ev = synthetic(min(CHUNK, n_wakeups - start), seed=i + 1, first_conn=first_conn,
                       start_ns=end_ns)
        for row in range(0, len(ev), ROW_GROUP):
            writer.write(ev[row : row + ROW_GROUP])
        kinds = ev["kind"]
        wakeups += int(np.count_nonzero(kinds == Kind.WAKEUP))
        first_conn += int(np.count_nonzero(kinds == Kind.CONN))
        end_ns = int(ev["ts"].max())
        del ev
    writer.close({"schema_version": SCHEMA_VERSION, "start_monotonic_ns": 0,
                  "end_monotonic_ns": end_ns, "lost_events": 0})
    return wakeups


IN_MEMORY_UP_TO = 10_000_000  # wakeups; past this the in-memory path needs > 2 GiB


def run(sizes: tuple[int, ...], workdir: Path) -> list[dict[str, float]]:
    """Per size: generation, then streamed analysis, and in-memory where it fits."""
    results = []
    for n in sizes:
        path = workdir / f"synthetic-{n}.parquet"
        t0 = time.perf_counter()
        wakeups = write(path, n)
        gen = time.perf_counter() - t0
        row: dict[str, float] = {"wakeups": wakeups, "generate_s": gen,
                                 "file_mib": path.stat().st_size / 2**20}
        streamed = _measure_rss(path, "stream")
        row.update(stream_seconds=streamed["seconds"], stream_peak_mib=streamed["peak_mib"])
        if n <= IN_MEMORY_UP_TO:
            row.update(_measure_rss(path, "memory"))
        results.append(row)
        path.unlink()
    return results


def _measure_rss(path: Path, how: str) -> dict[str, float]:
    """Wall time and peak RSS of analysing one file in a fresh interpreter."""
    proc = subprocess.Popen([sys.executable, "-c", ANALYSE, str(path), how], stdout=subprocess.PIPE,
                            text=True)
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"analysis of {path} failed ({proc.returncode})")
    data = json.loads(out)
    return {"seconds": float(data["seconds"]), "peak_mib": data["peak_kib"] / 1024}
